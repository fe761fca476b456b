"""Intervals for one metric from its per-row values: Wilson for 0/1 scores, t or seeded bootstrap otherwise."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Literal, Sequence

import numpy as np
import numpy.typing as npt

Values = Sequence[float] | npt.NDArray[np.floating] | npt.NDArray[np.integer]
Method = Literal["t", "percentile", "bca"]
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Interval:
    """An estimate with its bounds at ``level``; for ``sides=1`` each bound is one-sided at ``level``."""

    low: float
    high: float
    estimate: float
    se: float
    n: int
    method: str
    level: float = 0.95
    sides: int = 2


def stable_seed(key: str | int) -> int:
    """A seed from a cell id that is the same in every process and run (``hash()`` is salted per process)."""
    if isinstance(key, int):
        return key
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def _z(level: float, sides: int) -> float:
    if not 0 < level < 1:
        raise ValueError(f"confidence level {level!r} is not between 0 and 1")
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, not {sides!r}")
    return _NORMAL.inv_cdf(level if sides == 1 else (1 + level) / 2)


# -- one sample: 0/1 scores ------------------------------------------------------------------------------------


def wilson(successes: int, n: int, level: float = 0.95, sides: int = 2, continuity: bool = True) -> Interval:
    """Wilson score interval for a proportion, continuity-corrected by default.

    Wilson keeps its width honest near 0 and 1 where Wald collapses to a point. Plain Wilson still lets 6-8%
    of suites pass a one-sided 95% check at a third of the thresholds between 0.5 and 0.995 (exact binomial
    sums at 20, 40 and 400 rows); with the continuity correction none exceeds 5%, so gates use it.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    low, high = _wilson_bounds(successes, n, _z(level, sides), 0.5 if continuity else 0.0)
    p = successes / n
    method = "wilson-cc" if continuity else "wilson"
    return Interval(low, high, p, math.sqrt(p * (1 - p) / n), n, method, level, sides)


def clustered_wilson(values: Values, clusters: Sequence[object], level: float = 0.95, sides: int = 2) -> Interval:
    """Wilson (continuity-corrected) for 0/1 values that come in clusters (a row's repeats, a declared cluster),
    on their effective number: n over the design effect, the cluster-robust variance over the binomial one.

    It lies between the number of clusters (each cluster's values all agree: the interval of one value per
    cluster) and n (values within a cluster vary as independently as across). All 0s or all 1s carry no
    variance to measure, so they count one value per cluster: a cluster-robust t interval would shrink to
    a point there and pass any gate.
    """
    z = _z(level, sides)
    array = np.asarray(values, dtype=float)
    if not np.isin(array, (0.0, 1.0)).all():
        raise ValueError("clustered_wilson takes 0/1 values")
    sums, counts = _cluster_totals(array, clusters)
    n, groups = float(counts.sum()), len(sums)
    p = float(sums.sum()) / n
    effective = float(groups)
    if 0 < p < 1 and groups > 1:
        robust = groups / (groups - 1) * float(((sums - counts * p) ** 2).sum()) / n**2
        effective = n if robust == 0 else min(n, max(groups, p * (1 - p) / robust))
    low, high = _wilson_bounds(p * effective, effective, z, 0.5)
    return Interval(low, high, p, math.sqrt(p * (1 - p) / effective), int(n), "wilson-cc-clustered", level, sides)


def _wilson_bounds(successes: float, n: float, z: float, cc: float) -> tuple[float, float]:
    """Wilson's bounds for ``successes`` of ``n`` (either may be an effective, fractional count)."""
    low = 0.0 if successes == 0 else _wilson_root(max(0.0, successes - cc) / n, n, -z)
    high = 1.0 if successes == n else _wilson_root(min(n, successes + cc) / n, n, z)
    return low, high


def _wilson_root(p: float, n: float, z: float) -> float:
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, max(0.0, (centre + spread) / (1 + z * z / n)))


def _bisect(f: Callable[[float], float], lo: float, hi: float, steps: int = 60) -> float:
    """Root of an increasing ``f`` on [lo, hi]."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


# -- one sample: continuous scores -----------------------------------------------------------------------------


def mean_interval(
    values: Values,
    level: float = 0.95,
    seed: str | int = 0,
    clusters: Sequence[object] | None = None,
    sides: int = 2,
    method: Method = "t",
    resamples: int = 4000,
) -> Interval:
    """Interval for the mean of per-row values; rows sharing a cluster key resample (and count) together.

    One row (or one cluster) has no interval: its bounds are infinite, so no gate passes on it.
    ``t`` (default): exact for normal rows and close for bounded scores, deterministic, no seed needed; with
    clusters it uses the cluster-robust standard error on G-1 degrees of freedom. ``bca``/``percentile``:
    a seeded bootstrap for skewed metrics; the seed comes from ``stable_seed(seed)`` so reruns agree.
    """
    _z(level, sides)
    if method not in ("t", "percentile", "bca"):
        raise ValueError(f"interval method must be t, percentile or bca, not {method!r}")
    sums, counts = _cluster_totals(np.asarray(values, dtype=float), clusters)
    total, n = float(sums.sum()), int(counts.sum())
    estimate = total / n
    if len(sums) < 2:
        return Interval(-math.inf, math.inf, estimate, math.nan, n, method, level, sides)
    if method == "t":
        return _t_interval(sums, counts, estimate, level, sides)
    replicates = _bootstrap_means(sums, counts, resamples, seed)
    jackknife = (total - sums) / (n - counts) if method == "bca" else None
    return bootstrap_interval(estimate, replicates, level, sides, jackknife, n=n)


def _cluster_totals(
    values: npt.NDArray[np.float64], clusters: Sequence[object] | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-cluster sums and row counts; without clusters each row is its own cluster."""
    if values.ndim != 1 or len(values) == 0:
        raise ValueError("need a non-empty sequence of per-row values")
    if clusters is None:
        return values, np.ones(len(values), dtype=float)
    if len(clusters) != len(values):
        raise ValueError(f"{len(clusters)} cluster keys for {len(values)} rows")
    keys: dict[object, int] = {}
    index = np.array([keys.setdefault(key, len(keys)) for key in clusters])
    return np.bincount(index, weights=values).astype(float), np.bincount(index).astype(float)


def _t_interval(
    sums: npt.NDArray[np.float64], counts: npt.NDArray[np.float64], estimate: float, level: float, sides: int
) -> Interval:
    groups, n = len(sums), int(counts.sum())
    residual = sums - counts * estimate
    se = math.sqrt(groups / (groups - 1) * float((residual**2).sum())) / n
    half = t_quantile(level if sides == 1 else (1 + level) / 2, groups - 1) * se
    return Interval(estimate - half, estimate + half, estimate, se, n, "t", level, sides)


def _bootstrap_means(
    sums: npt.NDArray[np.float64], counts: npt.NDArray[np.float64], resamples: int, seed: str | int
) -> npt.NDArray[np.float64]:
    picks = bootstrap_indices(len(sums), resamples, seed)
    return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)


def bootstrap_indices(size: int, resamples: int, seed: str | int) -> npt.NDArray[np.intp]:
    """``resamples`` rows of indices drawn with replacement: the same for the same seed on every machine.

    Public so an aggregation node can be re-run on the very resamples a metric's interval uses.
    """
    return np.random.default_rng(stable_seed(seed)).integers(0, size, size=(resamples, size))


def bootstrap_interval(
    estimate: float,
    replicates: Values,
    level: float = 0.95,
    sides: int = 2,
    jackknife: Values | None = None,
    n: int = 0,
) -> Interval:
    """Percentile interval of bootstrap replicates, or BCa when leave-one-out (jackknife) estimates are given.

    BCa corrects the percentile interval's bias and skew (second-order accurate); percentile is the fallback
    for statistics with no cheap jackknife (a re-run aggregation node).
    """
    _z(level, sides)
    reps = np.sort(np.asarray(replicates, dtype=float))
    se = float(reps.std(ddof=1))
    tail = 1 - level if sides == 1 else (1 - level) / 2
    if reps[0] == reps[-1]:
        return Interval(estimate, estimate, estimate, 0.0, n, "bootstrap", level, sides)
    if jackknife is None:
        low, high = np.quantile(reps, [tail, 1 - tail])
        return Interval(float(low), float(high), estimate, se, n, "percentile", level, sides)
    share = (np.sum(reps < estimate) + 0.5 * np.sum(reps == estimate)) / len(reps)
    bias = _NORMAL.inv_cdf(min(max(share, 0.5 / len(reps)), 1 - 0.5 / len(reps)))
    jack = np.asarray(jackknife, dtype=float)
    d = jack.mean() - jack
    denominator = 6 * float((d**2).sum()) ** 1.5
    accel = float((d**3).sum()) / denominator if denominator > 0 else 0.0

    def adjusted(q: float) -> float:
        z = bias + _NORMAL.inv_cdf(q)
        return _NORMAL.cdf(bias + z / (1 - accel * z))

    low, high = np.quantile(reps, [adjusted(tail), adjusted(1 - tail)])
    return Interval(float(low), float(high), estimate, se, n, "bca", level, sides)


def t_quantile(q: float, df: int) -> float:
    """Student t quantile without scipy: bisection on the closed-form CDF for integer df, Cornish-Fisher above 300."""
    if df > 300:
        z = _NORMAL.inv_cdf(q)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    if q < 0.5:
        return -t_quantile(1 - q, df)
    return _bisect(lambda t: _t_cdf(t, df) - q, 0.0, 1e3)


def _t_cdf(t: float, df: int) -> float:
    """P(T <= t) for t >= 0 (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(2, df - 1, 2):
            term *= c2 * k / (k + 1)
            series += term
        inside = 2 / math.pi * (theta + s * math.cos(theta) * series)
    else:
        term = series = 1.0
        for k in range(1, df - 1, 2):
            term *= c2 * k / (k + 1)
            series += term
        inside = s * series
    return 0.5 + inside / 2
