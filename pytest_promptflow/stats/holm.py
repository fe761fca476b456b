"""Holm's step-down: several one-sided checks at once with family-wise error at most alpha."""

from __future__ import annotations

from typing import Callable, Sequence


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: reject where <= alpha, family-wise error <= alpha under any dependence."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm_passes(clears: Callable[[int, float], bool], m: int, alpha: float = 0.05) -> list[bool]:
    """Holm on bounds: ``clears(i, level)`` says whether check i's bound at ``level`` clears its limit.

    With r checks left, every one whose bound clears at level 1 - alpha/r passes; stop when none does. Same
    verdicts as ``holm_adjust`` on the checks' p-values, for any bound (Wilson, Tango, bootstrap).
    """
    passed, remaining = [False] * m, list(range(m))
    while remaining:
        level = 1 - alpha / len(remaining)
        now = [i for i in remaining if clears(i, level)]
        if not now:
            break
        for i in now:
            passed[i] = True
        remaining = [i for i in remaining if not passed[i]]
    return passed
