"""Power, minimal detectable effects and rows needed (normal approximations, checked by simulation)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .intervals import _NORMAL, Interval, _bisect, t_quantile
from .paired import PairedInterval, _tango_constrained_worse, paired_difference_from_counts


def paired_power(n: int, p_better: float, p_worse: float, alpha: float = 0.05, margin: float = 0.0) -> float:
    """Power of the one-sided paired check that candidate > baseline - margin (Connor 1987; Nam 1997 margin).

    ``p_better``/``p_worse`` are the true rates of the two kinds of discordant rows; to catch a drop, swap them.
    """
    delta = p_better - p_worse
    p_null = _tango_constrained_worse(p_better, p_worse, -margin)
    sd_null = math.sqrt(max(2 * p_null - margin * (1 + margin), 0.0))
    sd_true = math.sqrt(max(p_better + p_worse - delta**2, 1e-12))
    return _NORMAL.cdf((math.sqrt(n) * (delta + margin) - _NORMAL.inv_cdf(1 - alpha) * sd_null) / sd_true)


def paired_mde(n: int, discordance: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference the one-sided paired check finds with ``power`` when rows disagree at ``discordance``.

    A difference d needs at least d discordant rows, so runs that agree more closely are taken to disagree on
    d (all one way), and McNemar's exact test needs log2(1/alpha) of them; ``inf`` when nothing is findable.
    """

    def shortfall(d: float) -> float:
        rate = max(discordance, d)
        return paired_power(n, (rate + d) / 2, (rate - d) / 2, alpha) - power

    fewest = math.ceil(math.log2(1 / alpha)) / n
    if fewest > 1 or shortfall(1.0) < 0:
        return math.inf
    return max(fewest, _bisect(shortfall, 0.0, 1.0))


def paired_rows_needed(discordance: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Rows the paired check needs to find ``effect`` with ``power`` at this discordance (for ``plan``)."""
    z_alpha, z_beta = _NORMAL.inv_cdf(1 - alpha), _NORMAL.inv_cdf(power)
    spread = z_alpha * math.sqrt(discordance) + z_beta * math.sqrt(max(discordance - effect**2, 0.0))
    return math.ceil((spread / effect) ** 2)


def threshold_power(n: int, threshold: float, true_value: float, alpha: float = 0.05) -> float:
    """Power of a one-sided ``>= threshold`` check on a 0/1 metric whose true rate is ``true_value``."""
    null_sd = math.sqrt(threshold * (1 - threshold))
    true_sd = math.sqrt(max(true_value * (1 - true_value), 1e-12))
    return _NORMAL.cdf((math.sqrt(n) * (true_value - threshold) - _NORMAL.inv_cdf(1 - alpha) * null_sd) / true_sd)


def threshold_mde(n: int, threshold: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """How far above ``threshold`` a 0/1 metric must truly be to pass with ``power`` (``inf`` if it cannot)."""
    if threshold_power(n, threshold, 1.0, alpha) < power:
        return math.inf
    return _bisect(lambda d: threshold_power(n, threshold, threshold + d, alpha) - power, 0.0, 1 - threshold)


def threshold_rows_needed(threshold: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Rows a ``>= threshold`` check needs to pass with ``power`` when the truth is ``threshold + effect``."""
    true_value = threshold + effect
    spread = _NORMAL.inv_cdf(1 - alpha) * math.sqrt(threshold * (1 - threshold)) + _NORMAL.inv_cdf(power) * math.sqrt(
        true_value * (1 - true_value)
    )
    return math.ceil((spread / effect) ** 2)


@dataclass(frozen=True)
class PowerCheck:
    """What a gated paired comparison could detect: shown as ``ok (underpowered: MDE 0.08 > 0.05)``."""

    n: int
    discordant: int
    mde: float
    min_effect: float
    power: float

    @property
    def underpowered(self) -> bool:
        return self.mde > self.min_effect


def paired_power_check(interval: PairedInterval, min_effect: float = 0.05, power: float = 0.8) -> PowerCheck:
    """The MDE and the power for ``min_effect`` at the observed discordance of a paired comparison."""
    alpha = 1 - interval.level if interval.sides == 1 else (1 - interval.level) / 2
    rate = max(interval.discordant / interval.n, min_effect)
    half = rate / 2
    return PowerCheck(
        interval.n,
        interval.discordant,
        paired_mde(interval.n, interval.discordant / interval.n, alpha, power),
        min_effect,
        paired_power(interval.n, half + min_effect / 2, half - min_effect / 2, alpha),
    )


def mean_power_check(interval: Interval, discordant: int, min_effect: float = 0.05, power: float = 0.8) -> PowerCheck:
    """``paired_power_check`` for continuous scores, from the paired t interval's standard error: a shift d is
    found with power Phi(d / se - t), so the MDE is (t + z_power) se (``inf`` with no standard error)."""
    alpha = 1 - interval.level if interval.sides == 1 else (1 - interval.level) / 2
    if interval.n < 2 or not math.isfinite(interval.se):
        return PowerCheck(interval.n, discordant, math.inf, min_effect, 0.0)
    critical = t_quantile(1 - alpha, interval.n - 1)
    if interval.se == 0:  # every paired row agrees exactly: any shift of every row shows
        return PowerCheck(interval.n, discordant, 0.0, min_effect, 1.0)
    mde = (critical + _NORMAL.inv_cdf(power)) * interval.se
    return PowerCheck(interval.n, discordant, mde, min_effect, _NORMAL.cdf(min_effect / interval.se - critical))


#: the most rows an equivalence check's "rows it would need" searches up to
MOST_ROWS = 1_000_000


def paired_equivalence_rows(better: int, worse: int, n: int, margin: float, level: float = 0.95) -> int | None:
    """Rows at which the two-sided paired interval of 0/1 scores (``paired_difference``) would fit inside
    +-``margin``, were the discordant rows as common as in these ``n``; None when no number of rows would."""
    def fits(rows: int) -> bool:
        b, w = round(better * rows / n), round(worse * rows / n)
        interval = paired_difference_from_counts(b, w, rows, level, sides=2)
        return -margin <= interval.low and interval.high <= margin

    return _fewest(fits, n) if abs(better - worse) / n < margin else None


def mean_equivalence_rows(estimate: float, sd: float, margin: float, level: float = 0.95) -> int | None:
    """Rows at which the two-sided paired t interval (mean ``estimate``, per-row spread ``sd``) would fit inside
    +-``margin``; None when no number of rows would (the difference itself is past the margin)."""
    if abs(estimate) >= margin or not math.isfinite(sd):
        return None

    def fits(rows: int) -> bool:
        return abs(estimate) + t_quantile(1 - (1 - level) / 2, rows - 1) * sd / math.sqrt(rows) <= margin

    return _fewest(fits, 2)


def _fewest(fits: Callable[[int], bool], start: int) -> int | None:
    """The smallest whole number of rows from ``start`` up for which ``fits`` holds (it holds for all above)."""
    low, high = max(start, 2), max(start, 2)
    while not fits(high):
        low, high = high + 1, high * 2
        if high > MOST_ROWS:
            return None
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return high
