"""Thresholds: parsing ``">= 0.6"`` (or ``">= baseline - 0.02 at 95%"``) and checking metrics against them
(pure, no I/O; a baseline comparison is computed by baseline.py and handed in as a ``Comparison``)."""

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
_EXPECTATION = re.compile(r"^\s*(\S+?)\s*((?:>=|<=|==|!=|>|<|not\s+below\b).*)$")
_BASELINE = re.compile(
    rf"^\s*(?:(>=|>)\s*baseline(?:\s*-\s*({_NUMBER}))?|(not)\s+below\s+baseline)\s*(?:\bat\b\s*(.*?))?\s*$")
NOT_BELOW = "not below"
_BASELINE_FORMS = '">= baseline - 0.02 at 95%", "> baseline at 95%" or "not below baseline at 95%"'
BOUNDED = (">=", ">", "<=", "<")  # the operators a confidence level applies to


@runtime_checkable
class HasInterval(Protocol):
    """A metric that can give its interval (evaluation.MetricValue); None when it has none."""

    def ci(self, level: float = 0.95, sides: int = 2) -> Any: ...


def at_level(level: float | None) -> str:
    """`` at 95%`` for a confidence level of 0.95, nothing for none."""
    return "" if level is None else f" at {level * 100:g}%"


def threshold_text(verdict: Mapping[str, Any]) -> str:
    """``>= 0.8 at 95%`` (``>= baseline - 0.02 at 95%``): a verdict record's threshold as the reports show it."""
    if verdict.get("baseline") is not None:
        return f"{verdict['op']} baseline{_minus(verdict.get('margin') or 0.0)}{at_level(verdict.get('level'))}"
    return f"{verdict['op']} {verdict['threshold']:g}{at_level(verdict.get('level'))}"


def verdict_word(verdict: Mapping[str, Any]) -> str:
    """``ok``, ``FAIL``, or for a baseline comparison that held but could not see ``min_effect``
    ``ok (underpowered: MDE 0.08 > 0.05)`` (``FAIL (underpowered: ...)`` when strict power made it fail)."""
    word = "ok" if verdict["passed"] else "FAIL"
    if not (verdict.get("underpowered") and verdict.get("holds")):
        return word
    mde = verdict.get("mde")
    shown = "none" if mde is None else f"{mde:.2g}"  # None: no difference is detectable on these rows
    return f"{word} (underpowered: MDE {shown} > {verdict['min_effect']:g})"


def _minus(margin: float) -> str:
    return f" - {margin:g}" if margin else ""


@dataclass(frozen=True)
class Threshold:
    """``metric op value``, e.g. ``accuracy >= 0.6``; with a ``level`` (``>= 0.8 at 95%``) the metric's
    one-sided bound at that level, lower for ``>=``/``>`` and upper for ``<=``/``<``, must clear the value."""

    metric: str
    op: str
    value: float
    where: Where | None = None
    level: float | None = None
    #: compares with a baseline on the same rows: ``op`` is ``>=`` or ``>`` (``value`` the margin) or ``not below``
    baseline: bool = False

    def __str__(self) -> str:
        if self.baseline:
            return f"{self.metric} {self.op} baseline{_minus(self.value)}{at_level(self.level)}"
        return f"{self.metric} {self.op} {self.value:g}{at_level(self.level)}"

    @property
    def rule(self) -> str:
        """A baseline threshold's check: ``non-inferior`` (with a margin), ``superior`` or ``not-below``."""
        if self.op == NOT_BELOW:
            return "not-below"
        return "non-inferior" if self.value else "superior"

    @property
    def bound_side(self) -> str:
        return "lower" if self.op in (">=", ">") else "upper"

    def holds(self, actual: float) -> bool:
        if actual is None or (isinstance(actual, float) and math.isnan(actual)):
            return False
        return OPERATORS[self.op](float(actual), self.value)


@dataclass(frozen=True)
class Comparison:
    """A baseline threshold's paired comparison (made by baseline.py): candidate - baseline on the rows both
    sides have, the one-sided bound the rule checks, and what the comparison could detect."""

    baseline: str  # the source as declared: cell:<configuration>, released, or a rows.csv path
    baseline_value: float  # the baseline's mean over the paired rows
    difference: float  # candidate - baseline over the paired rows
    bound: float  # lower bound of the difference (upper for "not below") at the threshold's level
    holds: bool  # the rule's verdict on that bound
    n: int  # paired rows
    unpaired: int  # rows of either side with no partner (or no value)
    discordant: int  # paired rows whose values differ
    mde: float  # the smallest difference found with 80% power at this n and discordance (inf: none)
    power: float  # the power to find a difference of min_effect
    min_effect: float
    method: str  # tango (0/1 scores) or t (continuous)
    strict: bool = False  # an underpowered comparison fails
    rescored: bool = False  # the stored baseline's outputs were scored by the current evaluators

    @property
    def underpowered(self) -> bool:
        return self.mde > self.min_effect

    @property
    def passed(self) -> bool:
        return self.holds and not (self.strict and self.underpowered)


@dataclass(frozen=True)
class Verdict:
    """A threshold against a metric; ``bound`` is the one-sided bound a threshold with a level checks (for a
    baseline threshold, the bound of candidate - baseline, and ``comparison`` says the rest)."""

    threshold: Threshold
    actual: float | None
    bound: float | None = None
    comparison: Comparison | None = None

    @property
    def checked(self) -> float | None:
        return self.actual if self.threshold.level is None else self.bound

    @property
    def passed(self) -> bool:
        if self.comparison is not None:
            return self.comparison.passed
        return self.checked is not None and self.threshold.holds(self.checked)

    def record(self) -> dict[str, Any]:
        """The verdict as the reports keep it; a baseline threshold's adds its comparison (``threshold`` is then
        the limit the bound had to clear: -margin, or 0)."""
        threshold = self.threshold
        record = {"metric": threshold.metric, "op": threshold.op, "threshold": threshold.value, "actual": self.actual,
                  "passed": self.passed, "level": threshold.level, "bound": self.bound}
        compared = self.comparison
        if compared is None:
            return record
        return {**record, "threshold": -threshold.value if threshold.rule == "non-inferior" else 0.0,
                "baseline": compared.baseline, "margin": threshold.value, "rule": threshold.rule,
                "holds": compared.holds, "baseline_value": compared.baseline_value, "difference": compared.difference,
                "n": compared.n, "unpaired": compared.unpaired, "discordant": compared.discordant,
                "mde": compared.mde if math.isfinite(compared.mde) else None, "power": compared.power,
                "min_effect": compared.min_effect, "underpowered": compared.underpowered, "method": compared.method,
                "rescored": compared.rescored}


def parse(metric: str, text: Any, where: Where | None = None) -> Threshold:
    """Parse one threshold; a bare number means ``>=``; ``at 95%`` adds a confidence level."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Threshold(metric, ">=", float(text), where)
    if "baseline" in str(text):
        return _parse_baseline(metric, str(text), where)
    match = _PATTERN.match(str(text))
    if not match:
        raise SpecError(
            where,
            f"cannot parse threshold {metric}: {text!r}",
            'write an operator and a number, e.g. ">= 0.6" or "<= 0.05", optionally with a level: ">= 0.6 at 95%"',
        )
    op, value, level = match.group(1), float(match.group(2)), match.group(3)
    return Threshold(metric, op, value, where, None if level is None else _level(metric, op, text, level, where))


def _parse_baseline(metric: str, text: str, where: Where | None) -> Threshold:
    """``>= baseline - 0.02 at 95%``, ``> baseline at 95%``, ``not below baseline at 95%``: always with a level,
    as a comparison of two noisy runs means nothing without one."""
    match = _BASELINE.match(text)
    if not match:
        raise SpecError(where, f"cannot parse threshold {metric}: {text!r}",
                        f"compare with a baseline as {_BASELINE_FORMS}")
    op, margin, level = match.group(1) or NOT_BELOW, float(match.group(2) or 0.0), match.group(4)
    if level is None:
        raise SpecError(where, f"threshold {metric}: {text!r} compares with a baseline but has no confidence level",
                        f'add one, e.g. "{text.strip()} at 95%"')
    return Threshold(metric, op, margin, where, _level(metric, ">=", text, level, where), baseline=True)


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


#: makes a baseline threshold's verdict (baseline.Comparer): given to ``check`` where a baseline is declared
Compare = Callable[[Threshold], Verdict]


def check(thresholds: tuple[Threshold, ...], metrics: Mapping[str, float],
          compare: Compare | None = None) -> list[Verdict]:
    """One verdict per threshold; a metric that is missing fails its threshold. A threshold with a level on
    a metric with no interval, or a baseline threshold with no baseline (``compare``), is a usage error
    (SpecError at the threshold's place)."""
    return [_compared(t, compare) if t.baseline else _verdict(t, metrics.get(t.metric)) for t in thresholds]


def _compared(threshold: Threshold, compare: Compare | None) -> Verdict:
    if compare is None:
        raise SpecError(threshold.where, f"threshold {threshold} compares with a baseline, but none is declared",
                        "add 'baseline: cell:<configuration>' (or 'released', or a previous rows.csv) to "
                        "experiment.yaml, or baseline=... to the marker or to flow_run.expect")
    return compare(threshold)


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
