"""Thresholds: parsing ``">= 0.6"`` and checking metrics against them (pure, no I/O)."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import SpecError, Where

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_PATTERN = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Threshold:
    """``metric op value``, e.g. ``accuracy >= 0.6``."""

    metric: str
    op: str
    value: float
    where: Where | None = None

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"

    def holds(self, actual: float) -> bool:
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return False
        return OPERATORS[self.op](float(actual), self.value)


@dataclass(frozen=True)
class Verdict:
    threshold: Threshold
    actual: float | None

    @property
    def passed(self) -> bool:
        return self.actual is not None and self.threshold.holds(self.actual)


def parse(metric: str, text: Any, where: Where | None = None) -> Threshold:
    """Parse one threshold; a bare number means ``>=``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Threshold(metric, ">=", float(text), where)
    match = _PATTERN.match(str(text))
    if not match:
        raise SpecError(
            where,
            f"cannot parse threshold {metric}: {text!r}",
            'write an operator and a number, e.g. ">= 0.6" or "<= 0.05"',
        )
    return Threshold(metric, match.group(1), float(match.group(2)), where)


def check(thresholds: tuple[Threshold, ...], metrics: Mapping[str, float]) -> list[Verdict]:
    """One verdict per threshold; a metric that is missing fails its threshold."""
    return [Verdict(t, metrics.get(t.metric)) for t in thresholds]
