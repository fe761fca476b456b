"""Running a cell: every row of its dataset through the flow, concurrently, in process.

The only place that runs flows. A row that raises becomes an error row and the run goes on.
A cell's run happens once per session however many tests use it.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .config import DatasetSpec, data_columns, parse_mapping
from .datasets import check_columns
from .errors import SpecError
from .flows import FlowTarget, RowOutcome
from .matrix import Cell


@dataclass(frozen=True)
class Row:
    """One dataset row through the flow."""

    index: int
    data: Mapping[str, Any]
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] | None
    error_type: str | None
    error_message: str | None
    latency: float

    @property
    def failed(self) -> bool:
        return self.error_type is not None


@dataclass(frozen=True)
class Run:
    """A cell's rows, in dataset order."""

    cell: Cell
    rows: tuple[Row, ...]
    seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        """Built-in metrics every run has."""
        latencies = sorted(r.latency for r in self.rows)
        return {
            "error_rate": sum(r.failed for r in self.rows) / len(self.rows),
            "latency.mean": statistics.fmean(latencies),
            "latency.p95": _percentile(latencies, 0.95),
            "rows": float(len(self.rows)),
        }


def _percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-len(values) * q // 1))
    return values[int(rank) - 1]


def flow_inputs(dataset: DatasetSpec, row: Mapping[str, Any], input_names: Sequence[str]) -> dict[str, Any]:
    """A row's flow inputs: the dataset's mappings, else the columns named like flow inputs."""
    if not dataset.mappings:
        return {name: row[name] for name in input_names if name in row}
    inputs = {}
    for name, expression in dataset.mappings.items():
        source = parse_mapping(expression)
        inputs[name] = row[source[1]] if source else expression
    return inputs


def check_mappings(dataset: DatasetSpec, rows: Sequence[Mapping[str, Any]], input_names: Sequence[str]) -> None:
    """Every ``${data.col}`` names a column and every mapped name is a flow input."""
    check_columns(dataset, rows, data_columns(dataset.mappings), dataset.where)
    unknown = [name for name in dataset.mappings if input_names and name not in input_names]
    if unknown:
        raise SpecError(dataset.where, f"mapping names {', '.join(unknown)} which the flow does not take",
                        f"the flow's inputs are: {', '.join(input_names)}")


class Engine:
    """Runs cells, each once per session, with rows in parallel threads."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = max(1, concurrency)
        self._runs: dict[tuple[Any, ...], Run] = {}
        self._lock = threading.Lock()

    def run(self, target: FlowTarget, cell: Cell, rows: Sequence[Mapping[str, Any]],
            connections: Mapping[str, Any], init: Mapping[str, Any] | None = None) -> Run:
        key = (target.identity, cell.key, repr(sorted((init or {}).items())))
        with self._lock:
            if key not in self._runs:
                self._runs[key] = self._execute(target, cell, rows, connections, init)
            return self._runs[key]

    def _execute(self, target: FlowTarget, cell: Cell, rows: Sequence[Mapping[str, Any]],
                 connections: Mapping[str, Any], init: Mapping[str, Any] | None) -> Run:
        runner = target.executor(dict(cell.variants), dict(cell.overrides), connections, init)
        check_mappings(cell.dataset, rows, runner.input_names)
        start = time.perf_counter()
        results = self.map(lambda item: _timed(runner, *item),
                           [(i, row, flow_inputs(cell.dataset, row, runner.input_names)) for i, row in enumerate(rows)])
        return Run(cell, tuple(results), time.perf_counter() - start)

    def map(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``function`` over items with the configured concurrency, results in order."""
        if self.concurrency == 1 or len(items) < 2:
            return [function(item) for item in items]
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="promptflow-row") as pool:
            return list(pool.map(function, items))


def _timed(run_row: Callable[[Mapping[str, Any]], RowOutcome], index: int, data: Mapping[str, Any],
           inputs: Mapping[str, Any]) -> Row:
    start = time.perf_counter()
    try:
        outcome = run_row(inputs)
    except Exception as exc:  # the engine itself never loses a row
        outcome = RowOutcome(None, type(exc).__name__, str(exc))
    return Row(index, data, inputs, outcome.outputs, outcome.error_type, outcome.error_message,
               time.perf_counter() - start)

