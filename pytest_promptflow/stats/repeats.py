"""Repeats: unbiased pass@k and pass^k per row from c successes of K tries, and flaky rows."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .intervals import Values


def pass_at_k(successes: Values, repeats: int, k: int) -> npt.NDArray[np.float64]:
    """Per-row unbiased pass@k, 1 - C(K-c, k)/C(K, k): the chance that some of k fresh tries passes."""
    c = _successes(successes, repeats, k)
    return np.array([1 - math.comb(repeats - ci, k) / math.comb(repeats, k) for ci in c])


def pass_hat_k(successes: Values, repeats: int, k: int) -> npt.NDArray[np.float64]:
    """Per-row unbiased pass^k, C(c, k)/C(K, k): the chance that all of k fresh tries pass ((c/K)^k is biased up)."""
    c = _successes(successes, repeats, k)
    return np.array([math.comb(ci, k) / math.comb(repeats, k) for ci in c])


def flaky_rows(successes: Values, repeats: int) -> npt.NDArray[np.bool_]:
    """Rows whose K tries neither all passed nor all failed."""
    c = _successes(successes, repeats, 1)
    return (c > 0) & (c < repeats)


def flaky_rate(successes: Values, repeats: int) -> float:
    """Share of rows that are flaky."""
    return float(flaky_rows(successes, repeats).mean())


def _successes(successes: Values, repeats: int, k: int) -> npt.NDArray[np.int64]:
    c = np.asarray(successes).astype(np.int64)
    if not 1 <= k <= repeats:
        raise ValueError(f"k must be between 1 and the number of repeats {repeats}, not {k}")
    if ((c < 0) | (c > repeats)).any():
        raise ValueError(f"successes must be between 0 and {repeats}")
    return c
