"""``pytest-promptflow plan``: from the last report, what each gated check at a confidence level can detect at
its rows, and the rows it would need to pass with 80% power (no model calls, normal approximations)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Iterator, Mapping, Sequence

from ..thresholds import threshold_text

POWER = 0.8
MIN_EFFECT = 0.05  # promptflow_min_effect's default: the smallest change a baseline check should catch


def plan_lines(document: Mapping[str, Any], min_effect: float = MIN_EFFECT) -> list[str]:
    """Per cell, one line per verdict with a level: n, the bound, the MDE at n and the rows needed."""
    lines: list[str] = []
    for flow in document.get("flows", []):
        for cell in flow["cells"]:
            checks = [_check_line(cell, verdict, min_effect) for verdict in _leveled(cell["verdicts"])]
            if checks:
                lines += [f"{cell['cell']}:", *(f"  {line}" for line in checks)]
    return lines or ["no threshold with a confidence level (e.g. \">= 0.8 at 95%\") in this report: nothing to plan"]


def _leveled(verdicts: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """The verdicts with a level, once each (every item of a cell records its own)."""
    seen: set[tuple[Any, ...]] = set()
    for verdict in verdicts:
        key = (verdict["metric"], verdict["op"], verdict["threshold"], verdict.get("level"), verdict.get("baseline"))
        if verdict.get("level") is not None and key not in seen:
            seen.add(key)
            yield verdict


def _check_line(cell: Mapping[str, Any], verdict: Mapping[str, Any], min_effect: float) -> str:
    outcome = "passes" if verdict.get("passed") else "fails"
    bound = verdict.get("bound")
    head = f"{verdict['metric']} {threshold_text(verdict)}: {outcome}, bound {_num(bound)}"
    if "baseline" in verdict and verdict.get("n"):
        return f"{head} vs baseline {verdict['baseline']}; {_paired_plan(verdict, min_effect)}"
    return f"{head}; {_threshold_plan(cell, verdict)}"


def _paired_plan(verdict: Mapping[str, Any], min_effect: float) -> str:
    """A paired baseline check: its discordance decides the rows (``paired_rows_needed``)."""
    from ..stats import paired_rows_needed

    n, discordant = int(verdict["n"]), int(verdict.get("discordant") or 0)
    effect = float(verdict.get("min_effect") or min_effect)
    alpha = 1 - float(verdict["level"])
    needed = paired_rows_needed(max(discordant / n, effect), effect, alpha, POWER)
    power = verdict.get("power")
    said = f", power {_num(power, 2)} for {effect:g}" if power is not None else ""
    return (f"n {n}, {discordant} discordant, MDE {_num(verdict.get('mde'))}{said}; "
            f"{_rows(needed, n)} to detect {effect:g} with {POWER:.0%} power")


def _threshold_plan(cell: Mapping[str, Any], verdict: Mapping[str, Any]) -> str:
    """A threshold at a level: the MDE at n, and the rows to pass if the measured value is the truth."""
    metric, intervals = verdict["metric"], cell.get("intervals", {})
    n, se = intervals.get(f"{metric}.n"), intervals.get(f"{metric}.se")
    actual = verdict.get("actual")
    if not n or actual is None or not isinstance(actual, (int, float)):
        return "no interval in the report to plan from"
    n, actual = int(n), float(actual)
    alpha, above = 1 - float(verdict["level"]), verdict["op"] in (">=", ">")
    # a <= / < check is a >= check on the other side: 1 - p for a rate, -x for any other value
    if _binary(cell, metric):
        truth, line = (actual, float(verdict["threshold"])) if above else (1 - actual, 1 - float(verdict["threshold"]))
        mde, needed = _binary_plan(n, line, truth, alpha)
    else:
        if se is None or not math.isfinite(float(se)):
            return f"n {n}, no standard error (too few rows) to plan from"
        effect = (actual - float(verdict["threshold"])) * (1 if above else -1)
        mde, needed = _normal_plan(n, float(se), effect, alpha)
    rows = ("more rows cannot pass it: the measured value is not past the threshold" if needed is None
            else f"{_rows(needed, n)} to pass with {POWER:.0%} power if the truth is the measured {actual:.4g}")
    return f"n {n}, MDE {_num(mde)} at n {n}; {rows}"


def _binary_plan(n: int, threshold: float, truth: float, alpha: float) -> tuple[float, int | None]:
    """MDE and rows needed of a ``>= threshold`` check on a 0/1 metric whose true rate is ``truth``."""
    from ..stats import threshold_mde, threshold_rows_needed

    if not 0 < threshold < 1:  # a check at 0 or 1 passes only when every row does
        return math.inf, None
    mde = threshold_mde(n, threshold, alpha, POWER)
    if truth <= threshold:
        return mde, None
    return mde, threshold_rows_needed(threshold, truth - threshold, alpha, POWER)


def _normal_plan(n: int, se: float, effect: float, alpha: float) -> tuple[float, int | None]:
    """MDE and rows needed from the interval's standard error (per-row spread ``se * sqrt(n)``)."""
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(POWER)
    mde = z * se
    if effect <= 0:
        return mde, None
    return mde, max(2, math.ceil((z * se * math.sqrt(n) / effect) ** 2))


def _binary(cell: Mapping[str, Any], metric: str) -> bool:
    """Whether a metric's per-row values are 0/1: ``error_rate``, a ``<x>_pass_rate``, or a score column whose
    every row is 0 or 1 (its interval is Wilson's)."""
    if metric == "error_rate" or metric.endswith("_pass_rate"):
        return True
    values = [value for row in cell.get("rows", []) for key, value in row.get("scores", {}).items()
              if key == metric or key.endswith(f".{metric}")]
    return bool(values) and all(isinstance(value, (int, float)) and value in (0, 1) for value in values)


def _rows(needed: int, n: int) -> str:
    return f"{needed} rows ({'enough' if needed <= n else f'{needed - n} more'})"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "none" if value is None else str(value)
    return f"{float(value):.{digits}g}"
