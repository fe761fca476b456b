"""What a test function gets: ``flow_run`` (a cell's run) and ``flow_run.evaluate(...)`` results."""

from __future__ import annotations

import inspect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from .engine import Row, Run
from .errors import SpecError, Where
from .evaluation import Evaluation, Metrics, MetricValue, evaluate, watched, worst_rows
from .experiment import no_flow_file
from .flows import FlowTarget
from .llm.transcript import LLMCall
from .metric_names import derived_aliases, run_aliases
from .repeats import repeat_metrics
from .reporting.best import built_in
from .reporting.failure import threshold_failure
from .thresholds import check, parse_expectation, require_metric


def metrics_of(run: Run, evaluations: Sequence[Evaluation]) -> Metrics:
    """Built-in metrics plus every evaluator's, each as a MetricValue that knows its cell and rows.

    An evaluator's metric is also reachable as ``<evaluator>.<metric>``; the short name is
    kept for the first evaluator that reports it, and never taken from a built-in: an evaluation
    flow that logs its own ``error_rate`` has it as ``<evaluator>.error_rate``.
    """
    values: dict[str, float] = dict(run.metrics)
    per_row = {name: run.metric_values[name] for name in values if name in run.metric_values}
    value_rows = {name: tuple(range(len(run.rows))) for name in per_row}  # the run row of each value
    resampled: dict[str, tuple[tuple[float, ...] | None, str]] = {}  # a logged metric's replicates, or why none
    for name in run.flow_metrics:  # the flow's own aggregation, as Run.metrics names its metrics
        resampled[f"flow.{name}" if built_in(name) else name] = (run.flow_replicates.get(name), run.flow_no_interval)
    owners: dict[str, str] = {}  # short name -> the evaluator it belongs to
    for ev in evaluations:
        for name, value in ev.metrics.items():
            if name not in values:
                owners[name] = ev.evaluator
            for key in ([] if name in values else [name]) + [f"{ev.evaluator}.{name}"]:
                values[key] = value
                if name in ev.values:
                    per_row[key], value_rows[key] = ev.values[name], ev.value_rows(name)
                elif name in ev.replicates or (ev.no_interval and not built_in(name)):
                    resampled[key] = (ev.replicates.get(name), ev.no_interval)
    clusters = {name: cluster_keys(run, value_rows[name]) for name in per_row}
    for name in list(per_row):  # a repeated run's pass@k, pass^k and flaky rate: one value per row
        for key, (value, row_values) in repeat_metrics(run, name, per_row[name], value_rows[name]).items():
            values[key], per_row[key] = value, row_values
    runs = len(run.rows)
    failed = [row for row in run.rows if row.failed]
    counted = f"{runs} rows" if run.repeats == 1 else f"{runs} runs ({run.dataset_rows} rows x {run.repeats} repeats)"
    notes = [f"{len(failed)} of {counted} failed (each scores the worst value in the evaluators' metrics), "
             f"first: {failed[0].error_type}: {failed[0].error_message}" if failed else "",
             *(ev.note for ev in evaluations), run.latency_note, run.calls_note,
             f"{run.duplicate_identities} rows share their identity with another row" if run.duplicate_identities
             else ""]
    note = "; ".join(n for n in notes if n)
    return Metrics({name: MetricValue(value, name, run.cell.id, run.dataset_rows, worst_rows(run, evaluations, name),
                                      len(failed), per_row.get(name), clusters.get(name),
                                      *resampled.get(name, (None, "")))
                    for name, value in values.items()}, note, derived_aliases(run_aliases(evaluations, owners), values))


CLUSTER = "cluster"  # the dataset column whose rows are not independent draws (one document's questions)


def cluster_keys(run: Run, value_rows: Iterable[int]) -> tuple[object, ...] | None:
    """The cluster of each value (``value_rows``: the run row each came from): the dataset's ``cluster`` column,
    else its dataset row (a row's repeats are one draw); None when neither groups anything."""
    declared = any(row.data.get(CLUSTER) is not None for row in run.rows)
    if not declared and run.repeats == 1:
        return None
    keys: list[object] = []
    for i in value_rows:
        row = run.rows[i]
        value = row.data.get(CLUSTER) if declared else None
        cluster = ("cluster", json.dumps(value, sort_keys=True, default=str))
        keys.append(("row", row.index) if value is None else cluster)
    return tuple(keys)


def interval_fields(metrics: Mapping[str, MetricValue]) -> dict[str, float | None]:
    """``<metric>.ci_low``, ``.ci_high``, ``.se`` and ``.n`` (95%, two-sided) of every metric that has an
    interval; a bound that does not exist (one row) is None."""
    fields: dict[str, float | None] = {}
    for name, metric in metrics.items():
        interval = metric.ci(0.95)
        if interval is not None:
            for field, value in (("ci_low", interval.low), ("ci_high", interval.high), ("se", interval.se),
                                 ("n", interval.n)):
                fields[f"{name}.{field}"] = float(value) if math.isfinite(value) else None
    return fields


def metric_properties(metrics: Mapping[str, MetricValue]) -> list[tuple[str, float]]:
    """Metrics and their intervals as JUnit user properties ``promptflow.<name>``."""
    values: dict[str, float | None] = {**{k: float(v) for k, v in metrics.items()}, **interval_fields(metrics)}
    return [(f"promptflow.{k}", round(v, 6)) for k, v in values.items() if v is not None]


@dataclass(frozen=True)
class EvalResult:
    """An evaluator's verdict on a run: ``metrics`` (with the built-ins) and per-row ``scores``."""

    run: Run
    evaluation: Evaluation
    metrics: Metrics

    @property
    def scores(self) -> tuple[Mapping[str, Any] | None, ...]:
        return self.evaluation.scores

    @property
    def calls(self) -> tuple[tuple[LLMCall, ...], ...]:
        """Per run row, the evaluator's own LLM calls on it (an LLM judge's prompt and answer); empty for others."""
        return self.evaluation.calls or tuple(() for _ in self.run.rows)


class FlowRun:
    """One cell of the matrix, already run: rows, outputs, built-in metrics, and ``evaluate``."""

    def __init__(self, session: Any, planned: Any, run: Run, item: Any = None) -> None:
        self._session = session
        self._item = item
        self.planned = planned
        self.run = run
        self.evaluations: list[Evaluation] = []  # every evaluate() of this test, for the reports
        #: every expect() of this test and every comparison of one of its metrics with a number, for the reports
        self.verdicts: list[dict[str, Any]] = []
        self._scorers: list[Callable[[Run], Evaluation]] = []  # every evaluate(), to score a baseline cell alike
        self.parity: dict[str, Any] | None = None  # the cell's parity with its twin (twin=), for the reports
        self._record(metrics_of(run, []))

    def _record(self, metrics: Metrics) -> None:
        """Metrics become the item's user properties (JUnit shows them)."""
        if self._item is not None:
            self._item.user_properties.extend(metric_properties(metrics))

    def __repr__(self) -> str:
        """What pytest prints for the ``flow_run`` argument of a failing test."""
        failed = sum(row.failed for row in self.run.rows)
        return f"<flow_run {self.cell.id}: {len(self.run.rows)} rows{f', {failed} failed' if failed else ''}>"

    @property
    def cell(self) -> Any:
        return self.run.cell

    @property
    def rows(self) -> tuple[Row, ...]:
        return self.run.rows

    @property
    def outputs(self) -> list[Mapping[str, Any] | None]:
        return [row.outputs for row in self.run.rows]

    @property
    def metrics(self) -> Metrics:
        """The built-in metrics; comparing one with a number (``assert ... <= 0.05``) records a verdict."""
        return watched(metrics_of(self.run, []), self.verdicts.append)

    def evaluate(self, evaluator: Any, mapping: Mapping[str, str] | None = None,
                 data: str | Path | None = None, name: str | None = None,
                 init: Mapping[str, Any] | None = None) -> EvalResult:
        """Score this run with an evaluation flow (path), an azure-ai-evaluation evaluator or a callable;
        ``init`` goes to a flex evaluation flow or instantiates a class evaluator."""
        from .project_root import check_inside

        session = self._session
        if isinstance(evaluator, (str, Path)):
            check_inside(session.rootdir / evaluator, session.confine_to, self.planned.spec.where, "evaluator")
            refused = no_flow_file(str(evaluator), session.rootdir, name or Path(evaluator).name)
            if refused:
                raise SpecError(self.planned.spec.where, refused)
            evaluator = session.target(evaluator, session.rootdir, self.planned.spec.where)
        rows = None
        dataset = self.cell.dataset
        if data is not None:
            from .config import DatasetSpec

            dataset = DatasetSpec(name=Path(data).stem, source=session.rootdir / data)
            check_inside(dataset.source, session.confine_to, self.planned.spec.where,
                         f"dataset {dataset.name!r}: source")
            rows = session.rows(dataset)
        evaluator, connections, init = session.prepare_evaluator(evaluator, self.planned.spec.connections, init,
                                                                 self.planned.spec.where)
        mapping = dict(mapping) if mapping is not None else self._default_mapping(evaluator, rows)

        def scorer(run: Run) -> Evaluation:
            return evaluate(session.engine, run, evaluator, mapping, name=name, data=rows, dataset=dataset,
                            connections=connections, init=init)

        evaluation = scorer(self.run)
        self._scorers.append(scorer)
        self.evaluations.append(evaluation)
        metrics = metrics_of(self.run, [evaluation])
        self._record(Metrics({key: metrics[key] for key in (f"{evaluation.evaluator}.{name}"
                                                             for name in evaluation.metrics)}))
        # in the reports a short name is the first evaluator's: a later one's verdict names its own spelling
        earlier = {name for ev in self.evaluations[:-1] for name in ev.metrics}
        spelled = {name: f"{evaluation.evaluator}.{name}" for name in evaluation.metrics if name in earlier}
        return EvalResult(self.run, evaluation, watched(metrics, self._verdict_recorder(spelled)))

    def _verdict_recorder(self, spelled: Mapping[str, str]) -> Callable[[dict[str, Any]], None]:
        """What records a compared metric's verdict, under the name the reports know that number by."""
        def record(verdict: dict[str, Any]) -> None:
            self.verdicts.append({**verdict, "metric": spelled.get(verdict["metric"], verdict["metric"])})

        return record

    def expect(self, expectation: str, baseline: str | Path | None = None) -> None:
        """Fail the test unless ``"accuracy >= 0.8 at 95%"`` (or ``"accuracy >= baseline - 0.02 at 95%"``) holds
        for this run and its evaluations so far, with the failure table an experiment.yaml threshold prints; the
        verdict goes into the reports either way. ``baseline`` (``cell:<configuration>``, ``released`` or a
        rows.csv path) replaces the marker's ``baseline=``; a baseline cell is scored by this test's evaluators."""
        import pytest

        caller = sys._getframe(1)  # CPython's private frame access: the test's file and line for a bad expectation
        where = Where(caller.f_code.co_filename, caller.f_lineno)
        threshold = parse_expectation(expectation, where)
        metrics = metrics_of(self.run, self.evaluations)
        require_metric(threshold, metrics)
        verdicts = check((threshold,), metrics, self._comparer(baseline, where))
        self.verdicts.extend(v.record() for v in verdicts)
        failure = threshold_failure(self.cell.id, self.run, verdicts, metrics)
        if failure:
            pytest.fail(failure, pytrace=False)

    def _comparer(self, baseline: str | Path | None, where: Where) -> Any:
        """What a baseline expectation compares with: ``baseline``, else the marker's; None when neither is given."""
        from .baseline import comparer, parse_baseline, settings_of
        from .pairing import ComparisonSettings

        spec = (parse_baseline(baseline, self._session.rootdir, where) if baseline is not None
                else self.planned.spec.baseline)
        if spec is None:
            return None
        settings = settings_of(self._item.config) if self._item is not None else ComparisonSettings()
        return comparer(spec, self._session, self.planned, self.run, self.evaluations, self._score_alike, settings)

    def check_twin(self, fail: bool = True) -> None:
        """Fail the test unless this cell's parity with its twin (the marker's ``twin=`` or ``twin_of=``) holds,
        both scored by every evaluator this test used; the parity goes into the reports either way. With
        ``fail`` False (the test failed already) only that, and a twin that cannot run is left to a passing test."""
        if self.planned.spec.twin is None:
            return
        import pytest

        from .baseline import settings_of
        from .pairing import ComparisonSettings
        from .twin import check_parity

        settings = settings_of(self._item.config) if self._item is not None else ComparisonSettings()
        try:
            parity = check_parity(self._session, self.planned, self.run, self.evaluations, self._score_alike,
                                  settings.twin_margin, settings.max_unpaired)
        except SpecError:
            if fail:
                raise
            return
        self.parity = parity.record()
        if fail and not parity.passed:
            pytest.fail(parity.failure(self.cell.id), pytrace=False)

    def _score_alike(self, planned: Any, run: Run) -> list[Evaluation]:
        """A baseline cell's run scored by every evaluator this test used, with the same mappings."""
        return [scorer(run) for scorer in self._scorers]

    def _default_mapping(self, evaluator: Any, rows: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
        """Evaluator inputs matched by name: flow outputs first, then data columns."""
        if isinstance(evaluator, FlowTarget):
            names = list(evaluator.definition.get("inputs") or {})
        else:
            params = inspect.signature(evaluator).parameters.values()
            names = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        outputs = next((r.outputs for r in self.run.rows if r.outputs), {}) or {}
        columns = (rows or [r.data for r in self.run.rows])[0]
        mapping = {}
        for name in names:
            if name in outputs:
                mapping[name] = f"${{run.outputs.{name}}}"
            elif name in columns:
                mapping[name] = f"${{data.{name}}}"
        return mapping
