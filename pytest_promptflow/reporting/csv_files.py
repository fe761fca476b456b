"""The report document as three CSV tables, for pandas, spreadsheets and CI artifacts.

- ``rows.csv``: one line per row of every cell (its data, inputs, outputs, error, cost, scores), and per
  repeat of a row when rows ran more than once (``repeat`` column, 0 to K-1);
- ``metrics.csv``: one line per cell, every metric of any cell as a column;
- ``experiments.csv``: one line per cell and evaluator with the build's columns (a cell kept from an
  earlier run: that run's), the consolidated experiment table of the GenAIOps template.

Columns come in a fixed order, then sorted: the same document always gives the same files.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import AbstractSet, Any, Iterable, Iterator, Mapping, Sequence

from ..scrub import write_pieces
from ..thresholds import threshold_text

ROWS, METRICS, EXPERIMENTS = "rows.csv", "metrics.csv", "experiments.csv"
CELL_COLUMNS = ("flow", "cell", "config", "variants", "overrides", "dataset", "dataset_hash")
ROW_COLUMNS = ("error", "latency", "cached", "llm_calls", "tokens", "cost")
ENVIRONMENT_COLUMNS = ("build_id", "run_id", "git_commit", "promptflow_env", "llm_mode")
BUILT_IN_ORDER = ("rows", "error_rate", "latency.rows", "latency.mean", "latency.p95", "llm.calls", "llm.cache_hits",
                  "tokens.prompt", "tokens.completion", "tokens.total", "cost.total")
INTERVAL_FIELDS = ("ci_low", "ci_high", "se", "n")
BUILT_IN_PREFIXES = ("latency.", "llm.", "tokens.", "cost.")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection"),
# and a dataset or a model answer may start with anything: such text is written with a leading '.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_csv(document: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write rows.csv, metrics.csv and experiments.csv into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    cells = [cell for flow in document["flows"] for cell in flow["cells"]]
    best = {(flow["flow"], flow["best"]) for flow in document["flows"]}
    tables = {
        ROWS: rows_table(cells),
        METRICS: metrics_table(cells, best),
        EXPERIMENTS: experiments_table(cells, document.get("environment", {})),
    }
    return [write_table(folder / name, table) for name, table in tables.items()]


def write_table(path: Path, table: Table) -> Path:
    """One table as a CSV file, every field made ``safe``, written whole (and scrubbed)."""
    return write_pieces(path, _csv_text(*table))


def _csv_text(header: list[str], lines: Iterable[list[Any]], piece_chars: int = 64_000) -> Iterator[str]:
    """The table's CSV text in pieces of whole lines, each about ``piece_chars`` long."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, quoting=csv.QUOTE_MINIMAL)
    writer.writerow([safe(column) for column in header])
    for line in lines:
        writer.writerow([safe(value) for value in line])
        if out.tell() >= piece_chars:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


#: a table's header and its lines (made as they are written: rows.csv's are never all in memory at once)
Table = tuple[list[str], Iterable[list[Any]]]


def rows_table(cells: Sequence[Mapping[str, Any]]) -> Table:
    """One line per row (and repeat): the cell's columns, the row's index and identity (and repeat, when rows
    repeat), data, inputs, outputs, costs and scores."""
    repeat = ["repeat"] if any(cell.get("repeats", 1) > 1 for cell in cells) else []
    data = _keys(row["data"] for cell in cells for row in cell["rows"])
    inputs = _keys(row["inputs"] for cell in cells for row in cell["rows"])
    outputs = _keys(row["outputs"] or {} for cell in cells for row in cell["rows"])
    scores = _keys(row["scores"] for cell in cells for row in cell["rows"])
    header = [*CELL_COLUMNS, "index", "id", *repeat, *(f"data.{k}" for k in data), *(f"inputs.{k}" for k in inputs),
              *(f"outputs.{k}" for k in outputs), *ROW_COLUMNS, *scores]
    lines = ([*cell_values(cell), row["index"], row.get("id", ""), *(row.get("repeat", 0) for _ in repeat),
              *(row["data"].get(k) for k in data),
              *(row["inputs"].get(k) for k in inputs), *((row["outputs"] or {}).get(k) for k in outputs),
              *(row[k] for k in ROW_COLUMNS), *(row["scores"].get(k) for k in scores)]
             for cell in cells for row in cell["rows"])
    return header, lines


def metrics_table(cells: Sequence[Mapping[str, Any]], best: AbstractSet[tuple[str, str | None]] = frozenset()) -> Table:
    """One line per cell: its columns, outcome, whether it is its flow's best configuration, the
    thresholds it failed, then every metric of any cell (evaluators', built-ins, prefixed ones), then the
    intervals of those that have one: ``<metric>.ci_low``, ``.ci_high``, ``.se``, ``.n`` (95%, two-sided)."""
    names = metric_order(name for cell in cells for name in cell["metrics"])
    given = {name for cell in cells for name in cell.get("intervals", {})}
    intervals = [f"{name}.{field}" for name in names for field in INTERVAL_FIELDS if f"{name}.{field}" in given]
    header = [*CELL_COLUMNS, "outcome", "best", "failed_thresholds", *names, *intervals]
    lines = [[*cell_values(cell), cell["outcome"], (cell["flow"], cell["config"]) in best, _failed(cell),
              *(cell["metrics"].get(name) for name in names),
              *(cell.get("intervals", {}).get(name) for name in intervals)] for cell in cells]
    return header, lines


def experiments_table(cells: Sequence[Mapping[str, Any]], environment: Mapping[str, Any]) -> Table:
    """One line per cell and evaluator: the build's columns, the cell's, the evaluator and its metrics."""
    per_cell = [(cell, evaluator_metrics(cell["metrics"])) for cell in cells]
    names = sorted({name for _, evaluators in per_cell for metrics in evaluators.values() for name in metrics})
    header = [*ENVIRONMENT_COLUMNS, *CELL_COLUMNS, "outcome", "evaluator", *names]
    lines = [[*_build(environment, cell), *cell_values(cell), cell["outcome"], evaluator,
              *(metrics.get(name) for name in names)]
             for cell, evaluators in per_cell for evaluator, metrics in sorted(evaluators.items())]
    return header, lines


def _build(environment: Mapping[str, Any], cell: Mapping[str, Any]) -> list[Any]:
    """The build columns of a cell: its run's (``origin``, reporting/history.py), else the document's."""
    return [{**environment, **cell.get("origin", {})}.get(column, "") for column in ENVIRONMENT_COLUMNS]


def cell_values(cell: Mapping[str, Any]) -> list[Any]:
    """The values of CELL_COLUMNS; variants and overrides as ``name=value;...``, sorted by name."""
    return [cell["flow"], cell["cell"], cell["config"], pairs(cell["variants"]), pairs(cell["overrides"]),
            cell["dataset"], cell["dataset_hash"]]


def pairs(values: Mapping[str, Any]) -> str:
    return ";".join(f"{key}={text(values[key])}" for key in sorted(values))


def is_built_in(metric: str) -> bool:
    """A metric every run has (the engine's), as opposed to an evaluator's."""
    return metric in ("rows", "error_rate") or metric.startswith(BUILT_IN_PREFIXES)


def evaluator_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """evaluator -> its metrics, from a cell's ``<evaluator>.<metric>`` keys.

    A cell's metrics hold each evaluator metric twice: ``<evaluator>.<metric>`` and the short
    ``<metric>`` (results.metrics_of), so ``a.b`` is evaluator ``a``'s metric ``b`` when ``b`` is a
    metric too. The metric may itself hold dots (a judge's ``cost.total``); the evaluator is the
    shortest prefix that fits.
    """
    found: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if is_built_in(key):
            continue
        for at in (i for i, char in enumerate(key) if char == "."):
            evaluator, metric = key[:at], key[at + 1:]
            if evaluator and metric in metrics:
                found.setdefault(evaluator, {})[metric] = value
                break
    return found


def metric_order(names: Iterable[str]) -> list[str]:
    """Evaluators' short metrics sorted, then the built-ins in BUILT_IN_ORDER (others sorted after
    them), then the ``<evaluator>.<metric>`` ones sorted."""
    unique = set(names)
    prefixed = {f"{evaluator}.{metric}" for evaluator, metrics in evaluator_metrics(dict.fromkeys(unique, 0.0)).items()
                for metric in metrics}
    built_in = {name for name in unique if is_built_in(name)}
    short = unique - prefixed - built_in
    known = [name for name in BUILT_IN_ORDER if name in built_in]
    return [*sorted(short), *known, *sorted(built_in - set(known)), *sorted(prefixed)]


def _keys(mappings: Iterable[Mapping[str, Any]]) -> list[str]:
    return sorted({key for mapping in mappings for key in mapping})


def _failed(cell: Mapping[str, Any]) -> str:
    failed = (f"{v['metric']} {threshold_text(v)}" for v in cell["verdicts"] if not v["passed"])
    return "; ".join(dict.fromkeys(failed))


def text(value: Any) -> str:
    """A value inside a longer text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def safe(value: Any) -> Any:
    """A CSV field: numbers and booleans as they are, None empty, containers as JSON, and text that
    a spreadsheet would run as a formula with a leading ``'`` (the csv module does the quoting)."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return value
    value = text(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value
