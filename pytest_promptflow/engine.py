"""Running a cell: every row of its dataset through the flow, concurrently, in process.

The only place that runs flows. A row that raises becomes an error row and the run goes on.
A cell's run happens once per session however many tests use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from .aggregation import Logged
from .config import DatasetSpec, data_columns, parse_mapping
from .datasets import check_columns
from .errors import SpecError
from .flows import Executors, FlowTarget, RowOutcome, Runner
from .llm import ledger
from .llm.transcript import LLMCall
from .matrix import Cell
from .promptflow_log import reroute

#: seconds between two ``tick`` calls to a cell's observer while its rows run
TICK = 0.25


@dataclass(frozen=True, slots=True)
class Row:
    """One dataset row through the flow (slots: a cell of 100,000 rows holds 100,000 of them)."""

    index: int
    data: Mapping[str, Any]
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] | None
    error_type: str | None
    error_message: str | None
    latency: float
    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    replay_misses: tuple[str, ...] = ()
    aggregation_input: Any = field(default=None, repr=False)  # what the flow's aggregation takes from it
    #: pairs this row with the same row in other runs: the dataset's ``id`` column, else a hash of the
    #: columns the flow reads (``row_identity``)
    identity: str = ""
    #: which of the row's runs this is (``--promptflow-repeat K``: 0 to K-1); its identity is the same in each
    repeat: int = 0
    #: its LLM calls, in the order they ended: the prompt sent, the answer got, tokens, cost, from the store or not
    calls: tuple[LLMCall, ...] = field(default=(), repr=False)
    #: where it ran when not here (``Azure ML run NAME``): its LLM calls, tokens, cost and latency are not
    #: known here, so they are left out of the metrics, not counted as zero; '' when it ran here
    elsewhere: str = ""

    @property
    def failed(self) -> bool:
        return self.error_type is not None

    @property
    def cached(self) -> bool:
        """Some of its LLM answers came from the store, so its latency says nothing about the model."""
        return self.cache_hits > 0


@dataclass(frozen=True)
class Run:
    """A cell's rows, in dataset order; with ``repeats`` K above 1, each dataset row's K runs one after another
    (``rows[i * K + r]`` is row i's repeat r)."""

    cell: Cell
    rows: tuple[Row, ...]
    seconds: float
    #: what the flow's own aggregation nodes logged with ``log_metric`` (an evaluation flow under test), with
    #: their values on bootstrap resamples of the rows or why they have none (``aggregation.logged_metrics``)
    flow_metrics: Mapping[str, float] = field(default_factory=dict)
    repeats: int = 1
    flow_replicates: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    flow_no_interval: str = ""

    @property
    def dataset_rows(self) -> int:
        """How many dataset rows ran (each ``repeats`` times)."""
        return len(self.rows) // self.repeats

    @property
    def metrics(self) -> dict[str, float]:
        """The flow's own logged metrics, then the built-in metrics every run has (a logged metric with a
        built-in's name is kept as ``flow.<name>``). Latency rests on live rows only (``latency.rows`` of
        them): with every row answered from the store there is no latency to report."""
        live = [] if self.elsewhere else sorted(r.latency for r in self.rows if not r.cached)
        builtin = {
            "error_rate": sum(r.failed for r in self.rows) / len(self.rows),
            "rows": float(self.dataset_rows),
            "latency.rows": float(len(live)),
            **({} if self.elsewhere else ledger.spend(self.rows)),
        }
        if live:
            builtin["latency.mean"] = statistics.fmean(live)
            builtin["latency.p95"] = _percentile(live, 0.95)
        logged = {(f"flow.{name}" if name in builtin else name): value for name, value in self.flow_metrics.items()}
        return {**logged, **builtin}

    @property
    def metric_values(self) -> dict[str, tuple[float, ...]]:
        """The per-row values of the built-in metrics that are their mean: ``error_rate``'s 1 per failed row."""
        return {"error_rate": tuple(float(row.failed) for row in self.rows)}

    @property
    def elsewhere(self) -> str:
        """Where its rows ran when not here (a backend's remote run): '' when here."""
        return next((row.elsewhere for row in self.rows if row.elsewhere), "")

    @property
    def calls_note(self) -> str:
        """Why the LLM call metrics are missing, when its rows ran elsewhere."""
        if not self.elsewhere:
            return ""
        return (f"its rows ran in {self.elsewhere}: their LLM calls, tokens and cost are not counted here (unknown, "
                "not zero) and their answers are not in the LLM store")

    @property
    def latency_note(self) -> str:
        """Why latency metrics are missing, when they are."""
        if self.elsewhere:
            return f"latency is not measured for rows that ran in {self.elsewhere}"
        if any(not row.cached for row in self.rows):
            return ""
        return (f"latency is measured on live rows only and all {len(self.rows)} rows were answered from the "
                "LLM store; run with --promptflow-llm=live to measure it")

    @property
    def replay_misses(self) -> list[str]:
        return [miss for row in self.rows for miss in row.replay_misses]

    @property
    def duplicate_identities(self) -> int:
        """Rows whose identity another row has too: they cannot be paired with a baseline's rows one to one."""
        counts = Counter(row.identity for row in self.rows if row.repeat == 0)
        return sum(n for n in counts.values() if n > 1)


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(values) * q // 1))
    return values[int(rank) - 1]


def flow_inputs(dataset: DatasetSpec, row: Mapping[str, Any], input_names: Sequence[str]) -> dict[str, Any]:
    """A row's flow inputs: the dataset's mappings, else the columns named like flow inputs. A column the row
    lacks is left out (``missing_column`` says so)."""
    if not dataset.mappings:
        return {name: row[name] for name in input_names if name in row}
    inputs = {}
    for name, expression in dataset.mappings.items():
        source = parse_mapping(expression)
        if source is None:
            inputs[name] = expression
        elif source[1] in row:
            inputs[name] = row[source[1]]
    return inputs


def read_columns(dataset: DatasetSpec, rows: Sequence[Mapping[str, Any]], input_names: Sequence[str]) -> list[str]:
    """The columns every row must have: those its mappings read, else the flow inputs some row has (an input
    no row has is not given, so the flow's default applies)."""
    if dataset.mappings:
        return data_columns(dataset.mappings)
    return [name for name in input_names if any(name in row for row in rows)]


def missing_column(dataset: DatasetSpec, index: int, row: Mapping[str, Any], columns: Sequence[str],
                   mappings: Mapping[str, Any] | None = None) -> str:
    """Why the row cannot run: it lacks a column the flow reads (other rows have it); '' when it has them all.
    ``mappings``: those that read the columns, when not the dataset's (an evaluator's)."""
    missing = next((column for column in columns if column not in row), None)
    if missing is None:
        return ""
    label = f"row {index}" + (f" (id {row['id']!r})" if row.get("id") is not None else "")
    mapped = [f"mapping {name}: {expression}" for name, expression in (mappings or dataset.mappings).items()
              if (parse_mapping(expression) or ("", ""))[1] == missing]
    where = mapped[0] if mapped else f"flow input {missing}, which other rows give"
    fix = "add it or fix the mapping" if mapped else "add it to the row"
    return f"dataset {dataset.name!r}: {label} has no column {missing!r} ({where}); {fix}"


def row_identity(dataset: DatasetSpec, row: Mapping[str, Any], input_names: Sequence[str]) -> str:
    """The dataset's ``id`` column, else a stable hash of the columns the flow reads (its mappings' columns,
    else the columns named like its inputs): the same row in two runs of one dataset has the same identity."""
    if row.get("id") is not None:
        return str(row["id"])
    columns = data_columns(dataset.mappings) if dataset.mappings else [n for n in input_names if n in row]
    read = {column: row.get(column) for column in sorted(columns)}
    text = json.dumps(read, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def check_mappings(dataset: DatasetSpec, rows: Sequence[Mapping[str, Any]], input_names: Sequence[str]) -> None:
    """Every ``${data.col}`` names a column and every mapped name is a flow input."""
    check_columns(dataset, rows, data_columns(dataset.mappings), dataset.where)
    unknown = [name for name in dataset.mappings if input_names and name not in input_names]
    if unknown:
        raise SpecError(dataset.where, f"mapping names {', '.join(unknown)} which the flow does not take",
                        f"the flow's inputs are: {', '.join(input_names)}")


class RowObserver(Protocol):
    """Watches one cell's run (e.g. live progress). Called only from the thread that runs the cell."""

    def row_done(self, row: Row) -> None: ...

    def tick(self) -> None:
        """Called after each batch of finished rows and every ``TICK`` seconds while rows run."""

    def close(self) -> None:
        """The run is over (or raised)."""


#: makes the observer of a cell's run from the cell and its number of rows; None to watch nothing
ObserverFactory = Callable[[Cell, int], "RowObserver | None"]


@dataclass(frozen=True)
class RowWork:
    """One row to run, for one of its repeats: what ``run_row`` takes, wherever it runs."""

    index: int
    data: Mapping[str, Any]
    inputs: Mapping[str, Any]
    identity: str
    repeat: int = 0
    missing: str = ""  # why it cannot run (a column it lacks); '' when it can
    site: str = ""  # where it is, in messages: flow, row, dataset, repeat


@dataclass(frozen=True)
class CellWork:
    """A cell's rows and what loads its flow: what a backend needs to run them elsewhere."""

    target: FlowTarget
    cell: Cell
    connections: Mapping[str, Any]
    init: Mapping[str, Any] | None
    rows: tuple[RowWork, ...]


class Backend(Protocol):
    """Where a cell's rows run when not in this process's threads (``--promptflow-backend``, ``backends``)."""

    def run_rows(self, work: CellWork, observer: RowObserver | None) -> list[Row]:
        """Every row of the cell, in order; a row that raises is an error row, as ``run_row`` makes it."""

    def close(self) -> None:
        """The session is over: release what the backend holds."""


class Engine:
    """Runs cells, each once per session, with rows in parallel threads or on a backend."""

    def __init__(self, concurrency: int, observe: ObserverFactory | None = None,
                 backend: Backend | None = None) -> None:
        self.concurrency = max(1, concurrency)
        self.observe = observe
        self.backend = backend
        self.executors = Executors()  # promptflow's, shared by the cells and evaluations of one configuration
        self._runs: dict[tuple[Any, ...], Run] = {}
        self._lock = threading.Lock()

    def run(self, target: FlowTarget, cell: Cell, rows: Sequence[Mapping[str, Any]],
            connections: Mapping[str, Any], init: Mapping[str, Any] | None = None, repeats: int = 1) -> Run:
        """The cell's run, each row ``repeats`` times."""
        key = (target.identity, cell.key, repr(sorted((init or {}).items())), repeats)
        with self._lock:
            if key not in self._runs:
                self._runs[key] = self._execute(target, cell, rows, connections, init, repeats)
            run = self._runs[key]
        return run if run.cell == cell else dataclasses.replace(run, cell=cell)  # same rows, its own name

    def _execute(self, target: FlowTarget, cell: Cell, rows: Sequence[Mapping[str, Any]],
                 connections: Mapping[str, Any], init: Mapping[str, Any] | None, repeats: int) -> Run:
        runner = target.executor(dict(cell.variants), dict(cell.overrides), connections, init, self.executors)
        reroute()  # promptflow's loggers made while it loaded the flow write to the log file too
        check_mappings(cell.dataset, rows, runner.input_names)
        start = time.perf_counter()
        site = f"flow {target.name}, row {{}} of dataset {cell.dataset.name}{{}}"
        names = runner.input_names or (tuple(dict.fromkeys(k for row in rows for k in row)) if runner.takes_row else ())
        columns = read_columns(cell.dataset, rows, names)
        work = CellWork(target, cell, connections, init, tuple(
            RowWork(i, row, flow_inputs(cell.dataset, row, names), row_identity(cell.dataset, row, names), r,
                    missing_column(cell.dataset, i, row, columns), site.format(i, repeat_label(r)))
            for i, row in enumerate(rows) for r in range(repeats)))
        observer = self.observe(cell, len(work.rows)) if self.observe else None
        try:
            if self.backend is None:
                results = self.map(lambda row: run_row(runner, row), work.rows, observer)
            else:
                results = self.backend.run_rows(work, observer)
        finally:
            if observer is not None:
                observer.close()
        logged = _aggregate(runner, results, cell.id, f"flow {target.name}, aggregation", repeats)
        return Run(cell, tuple(results), time.perf_counter() - start, logged.metrics, repeats, logged.replicates,
                   logged.no_interval)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    def map(self, function: Callable[[Any], Any], items: Sequence[Any],
            observer: RowObserver | None = None) -> list[Any]:
        """``function`` over items with the configured concurrency, results in order. The observer
        hears of each result and gets a ``tick`` at least every ``TICK`` seconds, on this thread."""
        if self.concurrency == 1 or len(items) < 2:
            results = []
            for item in items:
                results.append(function(item))
                if observer is not None:
                    observer.row_done(results[-1])
                    observer.tick()
            return results
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="promptflow-row") as pool:
            futures = [pool.submit(function, item) for item in items]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=TICK if observer is not None else None)
                if observer is not None:
                    for future in done:
                        if future.exception() is None:
                            observer.row_done(future.result())
                    observer.tick()
            return [future.result() for future in futures]


def _aggregate(runner: Runner, rows: Sequence[Row], seed: str, site: str, repeats: int) -> Logged:
    """The flow's aggregation nodes over its completed rows, after them, as ``pf run`` runs them."""
    done = [row for row in rows if not row.failed]
    if runner.aggregate is None or not done:
        return Logged({})
    return runner.aggregate([row.inputs for row in done], [row.aggregation_input for row in done], seed=seed,
                            site=site, not_resampled="its rows repeat" if repeats > 1 else "")


def repeat_label(repeat: int) -> str:
    """Where a row's later repeat is, in messages: ``, repeat 2``; nothing for the first."""
    return f", repeat {repeat}" if repeat else ""


def run_row(run: Callable[[Mapping[str, Any]], RowOutcome], work: RowWork) -> Row:
    """The row through the flow, timed, its LLM calls counted; one that lacks a column (``missing``) is an
    error row without running. A backend's worker calls it too."""
    with ledger.scope(work.site, work.repeat) as calls:
        start = time.perf_counter()
        try:
            outcome = RowOutcome(None, "MissingColumn", work.missing) if work.missing else run(work.inputs)
        except Exception as exc:  # the engine itself never loses a row
            outcome = RowOutcome(None, type(exc).__name__, str(exc))
        latency = time.perf_counter() - start if outcome.latency is None else outcome.latency
    return Row(work.index, work.data, work.inputs, outcome.outputs, outcome.error_type, outcome.error_message,
               latency, calls.llm_calls, calls.cache_hits, calls.prompt_tokens, calls.completion_tokens, calls.cost,
               tuple(calls.replay_misses), outcome.aggregation_input, work.identity, work.repeat,
               tuple(calls.transcript))
