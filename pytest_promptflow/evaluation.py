"""Evaluators -> per-row scores and aggregate metrics.

An evaluator is an evaluation flow (DAG/flex; its aggregation node's ``log_metric`` calls become
metrics, listed first), a ``.prompty`` judge (its answer per row read as a score), an
azure-ai-evaluation (or promptflow-evals) evaluator, or any callable returning a dict of scores per
row. Mappings: ``${data.x}`` and ``${run.outputs.x}`` (``${target.x}`` too).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .aggregation import aggregation_input, is_number, is_python_aggregation, logged_metrics
from .config import DatasetSpec, data_columns, parse_mapping
from .datasets import check_columns
from .engine import Engine, Row, Run, missing_column, repeat_label
from .errors import SpecError, Where, replay_error
from .flows import FlowTarget, executor_inputs
from .llm import ledger
from .llm.transcript import LLMCall
from .reporting.best import lower_is_better
from .thresholds import OPERATORS

if TYPE_CHECKING:
    from .stats import Interval


class MetricValue(float):
    """A metric that remembers its name, cell, row count (and how many of them failed), worst rows and, for a
    mean of per-row scores, those per-row values (its interval comes from them), for failure messages.
    ``clusters``: a key per value; values sharing one (a declared ``cluster`` column, a row's repeats) count as
    one draw in the interval. A metric an aggregation logged has ``replicates`` (its values on bootstrap
    resamples of the rows) instead of values, or ``no_interval``: why it has neither."""

    name: str
    cell_id: str
    rows: int
    worst: tuple[Mapping[str, Any], ...]
    error_rows: int
    values: tuple[float, ...] | None
    clusters: tuple[object, ...] | None
    replicates: tuple[float, ...] | None
    no_interval: str

    def __new__(cls, value: float, name: str, cell_id: str, rows: int,
                worst: Sequence[Mapping[str, Any]] = (), error_rows: int = 0,
                values: Sequence[float] | None = None, clusters: Sequence[object] | None = None,
                replicates: Sequence[float] | None = None, no_interval: str = "") -> "MetricValue":
        self = super().__new__(cls, value)
        self.name, self.cell_id, self.rows, self.worst = name, cell_id, rows, tuple(worst)
        self.error_rows = error_rows
        self.values = None if values is None else tuple(values)
        self.clusters = None if clusters is None else tuple(clusters)
        self.replicates = None if replicates is None else tuple(replicates)
        self.no_interval = no_interval
        return self

    #: where a comparison with a number goes: the FlowRun that handed this metric to a test keeps it as a
    #: threshold verdict (``assert result.metrics["accuracy"] >= 0.6``), passing or failing, with or without
    #: pytest's assertion rewriting; None for the metrics the plugin reads itself
    recorder: Callable[[dict[str, Any]], None] | None = None

    def __ge__(self, other: object) -> Any:
        return self._compared(">=", other)

    def __le__(self, other: object) -> Any:
        return self._compared("<=", other)

    def __gt__(self, other: object) -> Any:
        return self._compared(">", other)

    def __lt__(self, other: object) -> Any:
        return self._compared("<", other)

    def __eq__(self, other: object) -> Any:
        return self._compared("==", other)

    def __ne__(self, other: object) -> Any:
        return self._compared("!=", other)

    __hash__ = float.__hash__

    def _compared(self, op: str, other: object) -> Any:
        """``float``'s comparison, recorded as a verdict when this metric is watched and ``other`` is a finite
        number (``0.6 <= metric`` arrives here as ``metric >= 0.6``: Python asks the float subclass first)."""
        if not (type(other) in (int, float) and math.isfinite(limit := float(other))):  # type: ignore[arg-type]
            return getattr(float, f"__{_DUNDER[op]}__")(self, other)
        passed = OPERATORS[op](float(self), limit)
        if self.recorder is not None:
            self.recorder({"metric": self.name, "op": op, "threshold": limit, "actual": float(self), "passed": passed,
                           "level": None, "bound": None})
        return passed

    def ci(self, level: float = 0.95, sides: int = 2) -> Interval | None:
        """The interval of this metric at ``level`` (``sides=1``: two one-sided bounds, as a ``>=`` or
        ``<=`` gate reads them); None for a metric with neither per-row values nor resampled ones."""
        if self.values:
            return interval_of(self.values, level, sides, self.clusters)
        if self.replicates:
            from . import stats

            return stats.bootstrap_interval(float(self), self.replicates, level, sides, n=self.rows)
        return None


_DUNDER = {">=": "ge", "<=": "le", ">": "gt", "<": "lt", "==": "eq", "!=": "ne"}


def watched(metrics: Metrics, recorder: Callable[[dict[str, Any]], None]) -> Metrics:
    """``metrics`` (fresh from ``metrics_of``) whose comparisons with a number go to ``recorder``."""
    for value in metrics.values():
        value.recorder = recorder
    return metrics


def interval_of(values: Sequence[float], level: float = 0.95, sides: int = 2,
                clusters: Sequence[object] | None = None) -> Interval:
    """Wilson (continuity-corrected) for 0/1 values, a t interval for the mean of any others: both are
    deterministic, so reruns give the same verdict with no seed. Values that share a cluster key count as
    one draw: Wilson on their effective number, or the cluster-robust t."""
    from . import stats  # numpy, only once an interval is asked for

    zero_one = all(value in (0.0, 1.0) for value in values)
    if clusters is not None and len(set(clusters)) < len(clusters):
        if zero_one:
            return stats.clustered_wilson(values, clusters, level, sides)
        return stats.mean_interval(values, level, clusters=clusters, sides=sides)
    if zero_one:
        return stats.wilson(int(sum(values)), len(values), level, sides)
    return stats.mean_interval(values, level, sides=sides)


class Metrics(dict):
    """Metric name -> MetricValue; a missing name says which metrics there are, and why. ``aliases``: each name
    that says the same number as another -> the one the reports show (``metric_names``)."""

    def __init__(self, values: Mapping[str, Any], note: str = "", aliases: Mapping[str, str] | None = None) -> None:
        super().__init__(values)
        self.note = note
        self.aliases = dict(aliases or {})

    def __missing__(self, key: str) -> Any:
        import difflib

        close = difflib.get_close_matches(key, list(self), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        note = f"; {self.note}" if self.note else ""
        raise KeyError(f"no metric {key!r}{hint} (metrics: {', '.join(sorted(self))}){note}")


@dataclass(frozen=True)
class Evaluation:
    """One evaluator over one run: per-row scores and metrics. A row whose flow failed has the worst scores
    (``worst_scores``) and the error ``flow row failed``; a row the evaluator itself failed on has None."""

    evaluator: str
    dataset: str
    scores: tuple[Mapping[str, Any] | None, ...]
    errors: tuple[str | None, ...]
    metrics: Mapping[str, float]
    note: str = ""  # what a reader of its metrics must know (rows an aggregation left out)
    #: the per-row values of every metric that is their mean (failed rows at the worst): its interval's source
    values: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    #: a logged metric's values on bootstrap resamples of the rows (``aggregation.logged_metrics``)
    replicates: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    no_interval: str = ""  # why the logged metrics have no replicates
    #: a logged metric that is the mean of one per-row column (``accuracy`` over ``score``) -> that column: its
    #: values are the column's, so it gets the column's interval, not a bootstrap of the aggregation
    aliases: Mapping[str, str] = field(default_factory=dict)
    #: per run row, the evaluator's own LLM calls on it (an LLM judge's prompt and answer); empty for others
    calls: tuple[tuple[LLMCall, ...], ...] = ()

    def value_rows(self, metric: str) -> tuple[int, ...]:
        """The row index of each of ``values[metric]`` (a row the evaluator failed on has no value)."""
        column = self.aliases.get(metric, metric)
        return tuple(i for i, key, _ in _score_cells(self.scores) if key == column)


def resolve_row(mapping: Mapping[str, str], data: Mapping[str, Any], outputs: Mapping[str, Any] | None,
                where: Where | None) -> dict[str, Any]:
    values = {}
    for name, expression in mapping.items():
        source = parse_mapping(expression)
        if source is None:
            values[name] = expression
        elif source[0] == "data":
            if source[1] in data:  # a row without it does not run (``missing_column``); a failed row's line lacks it
                values[name] = data[source[1]]
        else:
            if outputs is None or source[1] not in outputs:
                raise SpecError(where, f"mapping {name}: {expression} names a flow output the run does not have",
                                f"outputs are: {', '.join(outputs or {}) or 'none'}")
            values[name] = outputs[source[1]]
    return values


def evaluate(engine: Engine, run: Run, evaluator: Any, mapping: Mapping[str, str], *, dataset: DatasetSpec,
             name: str | None = None, data: Sequence[Mapping[str, Any]] | None = None,
             connections: Mapping[str, Any] | None = None, init: Mapping[str, Any] | None = None) -> Evaluation:
    """Score ``run`` with ``evaluator``; ``data`` (rows of ``dataset``, aligned with the run's) defaults to the
    run's own rows. ``init``: a flex evaluation flow's init arguments."""
    where = dataset.where
    given = None if data is None else list(data)
    if given is not None and len(given) != run.dataset_rows:
        raise SpecError(where, f"evaluation data has {len(given)} rows but the run has {run.dataset_rows}",
                        "give the evaluator dataset the same rows, in order, as the dataset it references")
    rows = [row.data if given is None else given[row.index] for row in run.rows]  # each repeat: its row's data
    check_columns(dataset, rows, data_columns(mapping), where)
    if isinstance(evaluator, FlowTarget) and evaluator.kind == "prompty":
        judge = _prompty_judge(evaluator, mapping, name or evaluator.name, connections or {}, where)
        return _evaluate_callable(engine, run, judge, mapping, rows, name or evaluator.name, where)
    if isinstance(evaluator, FlowTarget):
        return _evaluate_flow(engine, run, evaluator, mapping, rows, name or evaluator.name,
                              connections or {}, where, init)
    return _evaluate_callable(engine, run, evaluator, mapping, rows, name or _callable_name(evaluator), where)


def _evaluate_callable(engine: Engine, run: Run, evaluator: Callable[..., Any], mapping: Mapping[str, str],
                       rows: Sequence[Mapping[str, Any]], name: str, where: Where | None) -> Evaluation:
    def score(i: int) -> tuple[Mapping[str, Any] | None, str | None]:
        if run.rows[i].failed:
            return None, "flow row failed"
        if missing := missing_column(run.cell.dataset, i, rows[i], data_columns(mapping), mapping):
            return None, missing
        kwargs = resolve_row(mapping, rows[i], run.rows[i].outputs, where)
        try:
            value = evaluator(**kwargs)
        except Exception as exc:  # one bad row does not lose the others
            return None, f"{type(exc).__name__}: {exc}"
        return (flatten(value) if isinstance(value, Mapping) else {name: value}), None

    spent: dict[int, ledger.RowCalls] = {}
    results = engine.map(_in_scope(run, f"evaluator {name}, row {{}} of dataset {run.cell.dataset.name}", score,
                                   spent),
                         range(len(rows)))
    scores = count_failed(run, [s for s, _ in results])
    columns = score_columns(scores)
    return Evaluation(name, run.cell.dataset.name, scores, tuple(e for _, e in results),
                      {**means(columns), **_spend(spent)}, values=columns, calls=_transcripts(spent, len(rows)))


def _evaluate_flow(engine: Engine, run: Run, target: FlowTarget, mapping: Mapping[str, str],
                   rows: Sequence[Mapping[str, Any]], name: str, connections: Mapping[str, Any],
                   where: Where | None, init: Mapping[str, Any] | None = None) -> Evaluation:
    executor = engine.executors.get(target, {}, {}, connections, init)
    flow_inputs = list(executor_inputs(executor))
    unknown = [k for k in mapping if flow_inputs and k not in flow_inputs]
    if unknown:
        raise SpecError(where, f"evaluator {name} has no input {', '.join(unknown)}",
                        f"its inputs are: {', '.join(flow_inputs)}")

    def line(i: int) -> tuple[Any, dict[str, Any] | str | None]:
        """The row's evaluation line and its inputs, else None and why it has none (None: the flow row failed)."""
        if run.rows[i].failed:
            return None, None
        if missing := missing_column(run.cell.dataset, i, rows[i], data_columns(mapping), mapping):
            return None, missing
        inputs = resolve_row(mapping, rows[i], run.rows[i].outputs, where)
        return executor.exec_line(inputs, index=i), inputs

    spent: dict[int, ledger.RowCalls] = {}
    lines = engine.map(_in_scope(run, f"evaluator {name}, row {{}} of dataset {run.cell.dataset.name}", line, spent),
                       range(len(rows)))
    scores: list[Mapping[str, Any] | None] = []
    errors: list[str | None] = []
    done: dict[int, tuple[dict[str, Any], Any]] = {}  # completed line -> its inputs and aggregation input
    for i, (result, inputs) in enumerate(lines):
        if result is None:
            scores.append(None)
            errors.append(inputs if isinstance(inputs, str) else "flow row failed")
            continue
        status = str(getattr(result.run_info.status, "value", result.run_info.status))
        if status != "Completed":
            scores.append(None)
            errors.append((result.run_info.error or {}).get("message", status))
            continue
        scores.append({k: v for k, v in (result.output or {}).items() if k != "line_number"})
        errors.append(None)
        done[i] = (inputs or {}, aggregation_input(result))
    lines_in, note = _aggregation_lines(run, mapping, rows, done, name, _aggregation_reads_outputs(target, mapping))
    with_failed = len(lines_in) > len(done)  # their lines lack the inputs the run's outputs feed (none reads them)
    given = [n for n in flow_inputs if not (with_failed and _from_run(mapping.get(n, "")))]
    counted = count_failed(run, scores)
    every_column = score_columns(counted)
    aggregated = logged_metrics(executor, given, [inputs for inputs, _ in lines_in], [line for _, line in lines_in],
                                f"{run.cell.id}:{name}", is_python_aggregation(target.definition),
                                f"evaluator {name}, aggregation over dataset {run.cell.dataset.name}",
                                needs_replicates=lambda logged: set(logged) - set(mean_columns(logged, every_column)))
    logged = aggregated.metrics
    # the flow's own log_metric calls first (the first is the primary metric), then means of per-row outputs
    columns = {k: v for k, v in every_column.items() if k not in logged}
    aliases = mean_columns(logged, every_column)
    values = {**columns, **{metric: every_column[column] for metric, column in aliases.items()}}
    return Evaluation(name, run.cell.dataset.name, counted, tuple(errors),
                      {**logged, **means(columns), **_spend(spent)}, note if logged else "", values,
                      aggregated.replicates, aggregated.no_interval, aliases, _transcripts(spent, len(rows)))


def mean_columns(logged: Mapping[str, float], columns: Mapping[str, Sequence[float]]) -> dict[str, str]:
    """Each logged metric that is the mean of exactly one per-row column, up to rounding (``round(x, 4)``; at
    most 0.005 and half a row's share) -> that column."""
    aliases = {}
    for metric, value in logged.items():
        found = [column for column, values in columns.items()
                 if abs(statistics.fmean(values) - value) <= min(0.005, 0.5 / len(values))]
        if len(found) == 1:
            aliases[metric] = found[0]
    return aliases


def _aggregation_lines(run: Run, mapping: Mapping[str, str], rows: Sequence[Mapping[str, Any]],
                       done: Mapping[int, tuple[dict[str, Any], Any]], name: str,
                       reads_outputs: bool) -> tuple[list[Any], str]:
    """What an evaluation flow's aggregation gets, in row order: its completed lines and every row whose flow
    failed, as a line of the worst values, so that a ``log_metric`` accuracy counts a crash as a miss. When the
    aggregation reads an input fed by the run's outputs (a failed row has none) or takes per-row values with no
    worst (text, lists), the failed rows are left out and the note says so."""
    failed = [i for i, row in enumerate(run.rows) if row.failed]
    if not failed or not done:
        return [done[i] for i in sorted(done)], ""
    worst = _NO_WORST if reads_outputs else _worst_like([line for _, line in done.values()])
    if worst is _NO_WORST:
        why = "reads the flow's outputs as inputs" if reads_outputs else "takes per-row values with no worst value"
        return [done[i] for i in sorted(done)], (
            f"evaluator {name}'s aggregation got {len(done)} of {len(run.rows)} rows: {len(failed)} rows whose "
            f"flow failed are left out, as it {why}")
    data_only = {key: expression for key, expression in mapping.items() if not _from_run(expression)}
    lines = dict(done)
    for i in failed:
        lines[i] = (resolve_row(data_only, rows[i], None, None), worst)
    return [lines[i] for i in sorted(lines)], ""


def _from_run(expression: str) -> bool:
    return (parse_mapping(expression) or ("",))[0] == "run"


def _aggregation_reads_outputs(target: FlowTarget, mapping: Mapping[str, str]) -> bool:
    """Whether a DAG evaluation flow's aggregation nodes read one of its inputs that the run's outputs feed."""
    fed = {f"${{inputs.{key}}}" for key, expression in mapping.items() if _from_run(expression)}
    aggregations = [node for node in target.definition.get("nodes") or [] if node.get("aggregation")]
    values = [str(value).replace(" ", "") for node in aggregations for value in (node.get("inputs") or {}).values()]
    return any(value in fed for value in values)


_NO_WORST = object()


def _worst_like(values: Sequence[Any]) -> Any:
    """The worst of values that sit at one place of every completed line (as ``worst_scores`` rates a column):
    a number's, a flag's, a pass/fail's, or a mapping of those; ``_NO_WORST`` for anything else."""
    if values and all(isinstance(v, bool) for v in values):
        return False
    if values and all(is_number(v) for v in values):
        return min(0.0, *(float(v) for v in values))
    if values and all(isinstance(v, str) and v.lower() in ("pass", "fail") for v in values):
        return "fail"
    if values and all(isinstance(v, Mapping) for v in values):
        worst = {key: _worst_like([v[key] for v in values if key in v]) for key in values[0]}
        return _NO_WORST if _NO_WORST in worst.values() else worst
    return _NO_WORST


class JudgeFailed(Exception):
    """A prompty judge's row that did not answer (its error becomes the row's error)."""


def _prompty_judge(target: FlowTarget, mapping: Mapping[str, str], name: str, connections: Mapping[str, Any],
                   where: Where | None) -> Callable[..., Mapping[str, Any]]:
    """A ``.prompty`` judge as a callable evaluator: its answer per row, read by ``judge_scores``. Its model
    comes from our connections, as for a prompty flow under test (``FlowTarget.executor``)."""
    runner = target.executor({}, {}, connections)
    unknown = [k for k in mapping if runner.input_names and k not in runner.input_names]
    if unknown:
        raise SpecError(where, f"evaluator {name} has no input {', '.join(unknown)}",
                        f"its inputs are: {', '.join(runner.input_names)}")
    declares_outputs = bool(target.definition.get("outputs"))

    def judge(**inputs: Any) -> Mapping[str, Any]:
        outcome = runner(inputs)
        if outcome.outputs is None:
            raise JudgeFailed(f"{outcome.error_type}: {outcome.error_message}")
        answer: Any = outcome.outputs if declares_outputs else outcome.outputs.get("output", outcome.outputs)
        return judge_scores(name, answer)

    return judge


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TAGGED_SCORE = re.compile(rf"<S2>\D*?({_NUMBER}).*?</S2>", re.DOTALL)  # azure-ai-evaluation's judges
_LEADING_SCORE = re.compile(rf"\s*({_NUMBER})(?!\w|\.\d)")  # "4", "4 - relevant", "4/5", "4. On topic"


def judge_scores(name: str, answer: Any) -> dict[str, Any]:
    """A judge's answer as scores: a JSON object's fields (numeric text as numbers), else one score named
    ``name``: the number the text is, starts with (``4 - relevant``) or tags as ``<S2>``, or else the text
    itself, kept as a non-numeric score."""
    if isinstance(answer, str):
        try:
            answer = json.loads(answer)
        except ValueError:
            found = _TAGGED_SCORE.search(answer) or _LEADING_SCORE.match(answer)
            return {name: float(found.group(1)) if found else answer.strip()}
    if isinstance(answer, Mapping):
        return {str(key): _as_score(value) for key, value in flatten(answer).items()}
    return {name: _as_score(answer)}


def _as_score(value: Any) -> Any:
    """A number given as text (``"5"``, as judges often write it) as a number; anything else unchanged."""
    if isinstance(value, str) and re.fullmatch(_NUMBER, value.strip()):
        return float(value)
    return value


def _in_scope(run: Run, site: str, function: Callable[[int], Any],
              spent: dict[int, ledger.RowCalls]) -> Callable[[int], Any]:
    """``function`` with its LLM calls counted into ``spent`` by row, in the repeat of the run row it scores (a
    judge's answers to a later repeat are stored apart, as the flow's are); a replay miss fails the evaluation."""
    def scoped(i: int) -> Any:
        row = run.rows[i]
        with ledger.scope(site.format(row.index) + repeat_label(row.repeat), row.repeat) as calls:
            result = function(i)
        spent[i] = calls
        if calls.replay_misses:
            raise replay_error(calls.replay_misses)
        return result

    return scoped


def _spend(spent: Mapping[int, ledger.RowCalls]) -> dict[str, float]:
    """An LLM judge's own calls, tokens and cost (reachable as ``<evaluator>.cost.total``); none for others."""
    counts = list(spent.values())
    return ledger.spend(counts) if any(calls.llm_calls for calls in counts) else {}


def _transcripts(spent: Mapping[int, ledger.RowCalls], rows: int) -> tuple[tuple[LLMCall, ...], ...]:
    """Each row's evaluator LLM calls, in row order; none at all when the evaluator called no model."""
    if not any(calls.transcript for calls in spent.values()):
        return ()
    return tuple(tuple(spent[i].transcript) if i in spent else () for i in range(rows))


def flatten(score: Mapping[str, Any]) -> dict[str, Any]:
    """One level of scores: azure-ai-evaluation nests some (``rouge_properties.rouge_recall``)."""
    flat: dict[str, Any] = {}
    for key, value in score.items():
        if isinstance(value, Mapping):
            flat.update({k: v for k, v in value.items() if not isinstance(v, Mapping)})
        else:
            flat[key] = value
    return flat


def worst_scores(scores: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """What a row whose flow failed scores in each column the evaluator gave other rows: the worst value, so
    the crash counts against the run. A number: 0, or the lowest score seen when some are below 0 (the scale's
    minimum is unknown; 0 is the floor of the usual 0..1 scores); for a lower-is-better name (``error_rate``,
    ``latency.*``, ``cost.*``, ...) the highest seen, at least 1 for a rate; ``fail`` for a ``<x>_result``
    pass/fail column; False for a flag. Thresholds and text are not scores and are left out."""
    worst: dict[str, Any] = {}
    for row in scores:
        for key, value in (row or {}).items():
            if key.endswith("_threshold"):
                continue
            if isinstance(value, bool):
                worst[key] = False
            elif key.endswith("_result") and str(value).lower() in ("pass", "fail"):
                worst[key] = "fail"
            elif is_number(value) and lower_is_better(key):
                worst[key] = max(worst.get(key, 1.0 if key.endswith("rate") else float(value)), float(value))
            elif is_number(value):
                worst[key] = min(worst.get(key, 0.0), float(value))
    return worst


def count_failed(run: Run, scores: Sequence[Mapping[str, Any] | None]) -> tuple[Mapping[str, Any] | None, ...]:
    """``scores`` with every row whose flow failed given ``worst_scores``: every metric has a value per row."""
    worst = worst_scores(scores)
    return tuple(dict(worst) if row.failed else score for row, score in zip(run.rows, scores, strict=True))


def means(columns: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The metrics of ``score_columns``: each column's mean."""
    return {key: statistics.fmean(values) for key, values in columns.items()}


def score_columns(scores: Sequence[Mapping[str, Any] | None]) -> dict[str, tuple[float, ...]]:
    """The per-row values whose means are the metrics: every numeric score, and 1/0 for a ``<x>_result``
    pass/fail column as ``<x>_pass_rate``. Booleans (``<x>_passed``) repeat what ``<x>_result`` says and are
    left out; a row the evaluator failed on (None) has no value."""
    columns: dict[str, list[float]] = {}
    for _, key, value in _score_cells(scores):
        columns.setdefault(key, []).append(value)
    return {key: tuple(values) for key, values in columns.items() if values}


def _score_cells(scores: Sequence[Mapping[str, Any] | None]) -> Iterator[tuple[int, str, float]]:
    """Row index, column and value of every value ``score_columns`` keeps, in row order."""
    for i, row in enumerate(scores):
        for key, value in (row or {}).items():
            if key.endswith("_threshold"):
                continue
            if key.endswith("_result") and str(value).lower() in ("pass", "fail"):
                yield i, key[: -len("_result")] + "_pass_rate", 1.0 if str(value).lower() == "pass" else 0.0
            elif is_number(value):
                yield i, key, float(value)


def _callable_name(evaluator: Any) -> str:
    return getattr(evaluator, "__name__", None) or type(evaluator).__name__


def worst_rows(run: Run, evaluations: Sequence[Evaluation], metric: str, limit: int = 3) -> list[dict[str, Any]]:
    """The rows that pull ``metric`` down most: error rows first, then the lowest per-row scores."""
    def per_row(i: int) -> float | None:
        for ev in evaluations:
            row = ev.scores[i] or {}
            numeric = {k: v for k, v in row.items() if is_number(v) and not k.endswith("_threshold")}
            if metric in numeric:
                return float(numeric[metric])
            if len(numeric) == 1:
                return float(next(iter(numeric.values())))
        return None

    ranked: list[tuple[float, int, str | None]] = []
    for i, row in enumerate(run.rows):
        value = per_row(i)
        if row.failed:
            ranked.append((-math.inf, i, f"{row.error_type}: {row.error_message}"))
        elif value is not None:
            ranked.append((value, i, None))
    ranked.sort(key=lambda item: (item[0], item[1]))
    worst = []
    for value, i, error in ranked[:limit]:
        row = run.rows[i]
        worst.append({"row": row.index, "inputs": dict(row.inputs), "outputs": dict(row.outputs or {}),
                      "score": None if value == -math.inf else value, "error": error, **_last_answer(row),
                      **({"repeat": row.repeat} if run.repeats > 1 else {})})
    return worst


def _last_answer(row: Row) -> dict[str, str]:
    """``{"answer": ...}``: the last answer the row's transcript (``Row.calls``) got, when a call got one."""
    answers = [call.answer for call in row.calls if call.error is None]
    return {"answer": answers[-1]} if answers else {}
