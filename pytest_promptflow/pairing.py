"""Pairing a cell's rows with a baseline's by row identity, and the paired verdict of a baseline threshold.

Both sides are ``Side``s: rows by identity with their scores keyed ``<evaluator>.<score>`` (as report.json and
rows.csv keep them) and whether their flow failed. A failed row scores the worst value on either side.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .aggregation import is_number
from .errors import SpecError, Where
from .thresholds import Comparison, Threshold, Verdict


@dataclass(frozen=True)
class ScoredRow:
    """One row of a side: its identity, scores (``<evaluator>.<score>``), whether its flow failed, its outputs."""

    identity: str
    scores: Mapping[str, Any]
    failed: bool = False
    outputs: Mapping[str, Any] | None = None
    repeat: int = 0  # which run of the row (--promptflow-repeat); a row's repeats share its identity


@dataclass(frozen=True)
class Side:
    """One side of a comparison: ``label`` names it in messages (``cell clf-small``, ``baseline cell:defaults``)."""

    label: str
    rows: tuple[ScoredRow, ...]

    def values(self, column: str) -> dict[str, float | None]:
        """identity -> the row's value in ``column`` (the mean over its repeats: rows pair, not runs); a failed
        row with no value scores the column's worst; None when no repeat has a value."""
        values = [row_value(row, column) for row in self.rows]
        worst = _worst(column, [value for row, value in zip(self.rows, values, strict=True) if not row.failed])
        runs: dict[str, list[float]] = {}
        for row, value in zip(self.rows, values, strict=True):
            value = worst if row.failed and value is None else value
            runs.setdefault(row.identity, [])
            if value is not None:
                runs[row.identity].append(value)
        return {identity: sum(found) / len(found) if found else None for identity, found in runs.items()}

    def duplicates(self) -> int:
        """Rows whose identity another row of this side has too (a row's repeats are one row)."""
        return sum(n for n in Counter(row.identity for row in self.rows if row.repeat == 0).values() if n > 1)


def side_of_run(label: str, run: Any, evaluations: Sequence[Any]) -> Side:
    """A run and its evaluations as a side (the scores of a row whose flow failed are already its worst)."""
    rows = []
    for i, row in enumerate(run.rows):
        scores = {f"{ev.evaluator}.{name}": value for ev in evaluations for name, value in (ev.scores[i] or {}).items()}
        rows.append(ScoredRow(row.identity, scores, row.failed, row.outputs, row.repeat))
    return Side(label, tuple(rows))


def row_value(row: ScoredRow, column: str) -> float | None:
    """A row's value of one per-row metric: a number, or 1/0 for a ``<x>_pass_rate`` read from ``<x>_result``;
    None when it has none (a row its evaluator failed on)."""
    value: Any = row.scores.get(column)
    if is_number(value):
        return float(value)
    if column.endswith("_pass_rate"):
        verdict = str(row.scores.get(column.removesuffix("_pass_rate") + "_result", "")).lower()
        return {"pass": 1.0, "fail": 0.0}.get(verdict)
    return None


def _worst(column: str, values: Sequence[float | None]) -> float | None:
    """The worst value of a column (evaluation.worst_scores' rule): what a failed row scores."""
    from .evaluation import worst_scores

    key = column.removesuffix("_pass_rate") + "_result" if column.endswith("_pass_rate") else column
    if key != column:
        return 0.0
    return worst_scores([{key: v} for v in values if v is not None]).get(key, 0.0)


def score_column(threshold: Threshold, candidate: Side, evaluators: Sequence[str]) -> str:
    """The per-row column a threshold's metric is the mean of: the metric itself (``acc.score``), else the first
    evaluator's ``<evaluator>.<metric>`` (as results.metrics_of gives the short name). A metric with no per-row
    values (an aggregation node's ``log_metric``) cannot be paired: one line naming the ones that can."""
    metric = threshold.metric
    from .reporting.best import lower_is_better

    if lower_is_better(metric):
        raise SpecError(threshold.where, f"threshold {threshold}: {metric} is better lower, and a baseline "
                        "comparison reads higher as better", "compare a score where higher is better")
    for column in [metric, *(f"{evaluator}.{metric}" for evaluator in evaluators)]:
        if any(row_value(row, column) is not None for row in candidate.rows):
            return column
    columns = sorted({_per_row_name(key) for row in candidate.rows for key in row.scores
                      if row_value(row, _per_row_name(key)) is not None})
    fix = f"compare a per-row score: {', '.join(columns)}" if columns else "add an evaluator that scores each row"
    raise SpecError(threshold.where, f"threshold {threshold}: {metric} has no per-row values to pair (it comes "
                    "from an aggregation node's log_metric)", fix)


def _per_row_name(key: str) -> str:
    return key.removesuffix("_result") + "_pass_rate" if key.endswith("_result") else key


@dataclass(frozen=True)
class Pairs:
    """The rows both sides have a value for, in the candidate's order, and how many rows had no partner."""

    candidate: tuple[float, ...]
    baseline: tuple[float, ...]
    only_candidate: int
    only_baseline: int
    no_value: int

    @property
    def unpaired(self) -> int:
        return self.only_candidate + self.only_baseline + self.no_value


def pair(candidate: Side, baseline: Side, column: str, max_unpaired: float, where: Where | None) -> Pairs:
    """Rows pair by identity. Rows sharing an identity, no row in common, or more than ``max_unpaired`` of the
    rows without a partner: one line naming both sides and the fix."""
    for side in (candidate, baseline):
        if side.duplicates():
            raise SpecError(where, f"{side.label}: {side.duplicates()} rows share their identity with another row, "
                            "so they cannot be paired one to one", "give the dataset an 'id' column, or remove the "
                            "duplicate rows")
    mine, theirs = candidate.values(column), baseline.values(column)
    common = [identity for identity in mine if identity in theirs]
    if not common:
        raise SpecError(where, f"{baseline.label} shares no row with {candidate.label} ({len(theirs)} and "
                        f"{len(mine)} rows)", "compare on the same data: rows pair by the dataset's id column, else "
                        "by the columns the flow reads")
    both = [identity for identity in common if mine[identity] is not None and theirs[identity] is not None]
    pairs = Pairs(tuple(mine[i] or 0.0 for i in both), tuple(theirs[i] or 0.0 for i in both),
                  len(mine) - len(common), len(theirs) - len(common), len(common) - len(both))
    total = len(both) + pairs.unpaired
    if pairs.unpaired > max_unpaired * total or not both:
        raise SpecError(where, f"{column}: {pairs.unpaired} of {total} rows are unpaired ({pairs.only_candidate} "
                        f"only in {candidate.label}, {pairs.only_baseline} only in {baseline.label}, "
                        f"{pairs.no_value} with no {column} value)",
                        f"compare on the same rows; at most {max_unpaired:.0%} may be unpaired "
                        "(ini promptflow_max_unpaired)")
    return pairs


@dataclass(frozen=True)
class ComparisonSettings:
    """How baseline comparisons judge power: ``min_effect`` they should detect (ini promptflow_min_effect),
    whether an underpowered one fails (``--promptflow-strict-power``), and the share of rows that may be
    unpaired (ini promptflow_max_unpaired). ``released`` finds the rows file a release stored for a flow and
    dataset (``registry.released_rows``), None when there is none. ``twin_margin``: how far a twin's metric may
    be from its original's (ini promptflow_twin_margin)."""

    min_effect: float = 0.05
    strict: bool = False
    max_unpaired: float = 0.10
    released: Callable[[str, str], Path | None] | None = None
    twin_margin: float = 0.03


def compare(threshold: Threshold, pairs: Pairs, source: str, settings: ComparisonSettings,
            seed: str, rescored: bool = False) -> Verdict:
    """The paired verdict: Tango (guarded by McNemar) for 0/1 scores, the paired t for continuous ones (seeded
    by the cell id for a bootstrap), and what it could detect: MDE at 80% power and the power for min_effect."""
    from . import stats

    x, y = pairs.candidate, pairs.baseline
    level = threshold.level or 0.95
    if all(value in (0.0, 1.0) for value in x + y):
        interval: Any = stats.paired_difference(x, y, level, sides=1)
        power = stats.paired_power_check(interval, settings.min_effect)
    else:
        interval = stats.paired_mean_difference(x, y, level, seed=seed, sides=1)
        power = stats.mean_power_check(interval, sum(a != b for a, b in zip(x, y, strict=True)), settings.min_effect)
    rule = stats.not_below(interval) if threshold.rule == "not-below" else stats.non_inferior(interval, threshold.value)
    comparison = Comparison(source, statistics.fmean(y), interval.estimate, rule.bound, rule.passed, len(x),
                            pairs.unpaired, power.discordant, power.mde, power.power, settings.min_effect,
                            interval.method, settings.strict, rescored)
    return Verdict(threshold, statistics.fmean(x), rule.bound, comparison)


class Comparer:
    """The verdicts of one cell's baseline thresholds (``thresholds.check``'s ``compare``); the baseline's rows
    are made on first use, once, and only if some threshold compares with them."""

    def __init__(self, source: Any, candidate: Side, evaluators: Sequence[str], baseline: Callable[[], Side],
                 settings: ComparisonSettings, seed: str, rescore: Callable[[Side], Side] | None = None,
                 aliases: Mapping[str, str] | None = None) -> None:
        self.source = source  # config.BaselineSpec
        self.aliases = dict(aliases or {})  # a logged metric -> the per-row column it is the mean of
        self.candidate = candidate
        self.evaluators = list(evaluators)
        self._load = baseline
        self._baseline: Side | None = None
        self.settings = settings
        self.seed = seed
        self._rescore = rescore  # a stored baseline's outputs scored by the current evaluators
        self._rescored: Side | None = None

    def __call__(self, threshold: Threshold) -> Verdict:
        metric = self.aliases.get(threshold.metric, threshold.metric)
        column = score_column(dataclasses.replace(threshold, metric=metric), self.candidate, self.evaluators)
        baseline = self._side(column)
        pairs = pair(self.candidate, baseline, column, self.settings.max_unpaired, self.source.where or threshold.where)
        return compare(threshold, pairs, self.source.text, self.settings, self.seed, baseline is self._rescored)

    def _side(self, column: str) -> Side:
        """The baseline's rows; when they hold no ``column`` at all (the evaluator changed since they were
        stored), their stored outputs rescored by the cell's evaluators."""
        if self._baseline is None:
            self._baseline = self._load()
        if self._rescore is None or any(row_value(row, column) is not None for row in self._baseline.rows):
            return self._baseline
        if self._rescored is None:
            self._rescored = self._rescore(self._baseline)
        return self._rescored
