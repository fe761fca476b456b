"""Thresholds: parsing ``">= 0.6"`` and checking metrics against them (pure, no I/O)."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from .errors import SpecError, Where

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATTERN = re.compile(rf"^\s*(>=|<=|==|!=|>|<)\s*({_NUMBER})\s*(?:\bat\b\s*(.*?))?\s*$")
_LEVEL = re.compile(rf"^({_NUMBER})\s*%$")
_EXPECTATION = re.compile(r"^\s*(\S+?)\s*((?:>=|<=|==|!=|>|<).*)$")
BOUNDED = (">=", ">", "<=", "<")  # the operators a confidence level applies to


@runtime_checkable
class HasInterval(Protocol):
    """A metric that can give its interval (evaluation.MetricValue); None when it has none."""

    def ci(self, level: float = 0.95, sides: int = 2) -> Any: ...


def at_level(level: float | None) -> str:
    """`` at 95%`` for a confidence level of 0.95, nothing for none."""
    return "" if level is None else f" at {level * 100:g}%"


def threshold_text(verdict: Mapping[str, Any]) -> str:
    """``>= 0.8 at 95%``: a verdict record's threshold as the reports show it."""
    return f"{verdict['op']} {verdict['threshold']:g}{at_level(verdict.get('level'))}"


@dataclass(frozen=True)
class Threshold:
    """``metric op value``, e.g. ``accuracy >= 0.6``; with a ``level`` (``>= 0.8 at 95%``) the metric's
    one-sided bound at that level, lower for ``>=``/``>`` and upper for ``<=``/``<``, must clear the value."""

    metric: str
    op: str
    value: float
    where: Where | None = None
    level: float | None = None

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}{at_level(self.level)}"

    @property
    def bound_side(self) -> str:
        return "lower" if self.op in (">=", ">") else "upper"

    def holds(self, actual: float) -> bool:
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return False
        return OPERATORS[self.op](float(actual), self.value)


@dataclass(frozen=True)
class Verdict:
    """A threshold against a metric; ``bound`` is the one-sided bound a threshold with a level checks."""

    threshold: Threshold
    actual: float | None
    bound: float | None = None

    @property
    def checked(self) -> float | None:
        return self.actual if self.threshold.level is None else self.bound

    @property
    def passed(self) -> bool:
        return self.checked is not None and self.threshold.holds(self.checked)

    def record(self) -> dict[str, Any]:
        """The verdict as the reports keep it."""
        return {"metric": self.threshold.metric, "op": self.threshold.op, "threshold": self.threshold.value,
                "actual": self.actual, "passed": self.passed, "level": self.threshold.level, "bound": self.bound}


def parse(metric: str, text: Any, where: Where | None = None) -> Threshold:
    """Parse one threshold; a bare number means ``>=``; ``at 95%`` adds a confidence level."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Threshold(metric, ">=", float(text), where)
    match = _PATTERN.match(str(text))
    if not match:
        raise SpecError(
            where,
            f"cannot parse threshold {metric}: {text!r}",
            'write an operator and a number, e.g. ">= 0.6" or "<= 0.05", optionally with a level: ">= 0.6 at 95%"',
        )
    op, value, level = match.group(1), float(match.group(2)), match.group(3)
    return Threshold(metric, op, value, where, None if level is None else _level(metric, op, text, level, where))


def _level(metric: str, op: str, text: Any, level: str, where: Where | None) -> float:
    """``95%`` as 0.95; a level needs a bound's direction and must lie strictly between 0% and 100%."""
    found = _LEVEL.match(level)
    if not level:
        raise SpecError(where, f"threshold {metric}: {text!r} says 'at' with no confidence level",
                        'write the level after it, e.g. ">= 0.8 at 95%", or drop "at"')
    if not found or not 0 < float(found.group(1)) < 100:
        raise SpecError(where, f"threshold {metric}: {text!r} has confidence level {level!r}",
                        'write a percentage between 0% and 100%, e.g. "at 95%"')
    if op not in BOUNDED:
        raise SpecError(where, f"threshold {metric}: {text!r} puts a confidence level on {op}",
                        "a level goes with >=, >, <= or <; drop it")
    return float(found.group(1)) / 100


def parse_expectation(text: str, where: Where | None = None) -> Threshold:
    """``"accuracy >= 0.8 at 95%"``: a metric name followed by a threshold, as ``flow_run.expect`` takes it."""
    match = _EXPECTATION.match(text)
    if not match:
        raise SpecError(where, f"cannot parse expectation {text!r}",
                        'write a metric, an operator and a number, e.g. "accuracy >= 0.8 at 95%"')
    return parse(match.group(1), match.group(2), where)


def require_metric(threshold: Threshold, metrics: Mapping[str, float], fix: str = "") -> None:
    """A threshold on a metric the cell does not have is a usage error naming the metrics it has."""
    if threshold.metric in metrics:
        return
    import difflib

    close = difflib.get_close_matches(threshold.metric, list(metrics), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SpecError(threshold.where, f"threshold on unknown metric {threshold.metric!r}",
                    fix or f"{hint}metrics of this cell: {', '.join(sorted(metrics))}")


def check(thresholds: tuple[Threshold, ...], metrics: Mapping[str, float]) -> list[Verdict]:
    """One verdict per threshold; a metric that is missing fails its threshold. A threshold with a level on
    a metric with no interval is a usage error (SpecError at the threshold's place)."""
    return [_verdict(t, metrics.get(t.metric)) for t in thresholds]


def _verdict(threshold: Threshold, actual: float | None) -> Verdict:
    if threshold.level is None or actual is None:
        return Verdict(threshold, actual)
    interval = actual.ci(threshold.level, sides=1) if isinstance(actual, HasInterval) else None
    if interval is None:
        why = getattr(actual, "no_interval", "") or _no_interval_reason(threshold.metric)
        raise SpecError(threshold.where, f"{threshold.metric} has no interval ({why})",
                        f"drop '{at_level(threshold.level).strip()}' or gate a mean of per-row scores")
    bound = interval.low if threshold.bound_side == "lower" else interval.high
    return Verdict(threshold, actual, float(bound))


def _no_interval_reason(metric: str) -> str:
    from .reporting.best import built_in

    if any(built_in(metric[i:].lstrip(".")) for i, char in enumerate(metric) if i == 0 or char == "."):
        return "it is not a mean of per-row values"
    return "it comes from an aggregation node's log_metric"
