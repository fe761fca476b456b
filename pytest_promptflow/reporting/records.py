"""What every report is made of: plain, JSON-able records.

An item's record (its cell, the cell's rows, the metrics and threshold verdicts it saw, its
outcome) is built where the item ran, travels on the test report (so it crosses from xdist
workers to the controller), and the controller merges all records into one document that the
terminal table, the CSV files, the HTML page and the tracking store all read.
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .schema import SCHEMA_VERSION

OUTCOME_ORDER = ("passed", "skipped", "failed", "error")  # a cell takes the worst of its items


def item_record(nodeid: str, outcome: str, planned: Any, run: Any = None, evaluations: Sequence[Any] = (),
                verdicts: Iterable[Mapping[str, Any]] = (), parity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One item's view of its cell. ``run`` is None when the item failed before its cell ran; ``parity`` is the
    cell's parity with its twin (``parity.Parity.record``), None without one."""
    cell = planned.cell
    defaults = {node: default for node, (default, _) in planned.target.node_variants().items()}
    record: dict[str, Any] = {
        "flow": cell.flow,
        "flow_source": planned.target.source,  # what a release packages ("" for a callable)
        "cell": cell.id,
        "config": cell.config,
        "variants": dict(cell.variants),
        "default": all(defaults.get(node, variant) == variant for node, variant in cell.variants),
        "overrides": {key: plain(value) for key, value in cell.overrides},
        "init": plain(dict(planned.init or {})),
        "dataset": cell.dataset.name,
        "dataset_path": str(cell.dataset.source),
        "dataset_hash": file_hash(Path(cell.dataset.source)),
        "items": [{"nodeid": nodeid, "outcome": outcome}],
        "verdicts": [dict(plain(v), item=nodeid) for v in verdicts],  # an actual may be a MetricValue
        "metrics": {},
        "aliases": {},  # a metric name -> the name the reports show for the same number
        "intervals": {},  # <metric>.ci_low, .ci_high, .se, .n (95%, two-sided) of the metrics that have one
        "repeats": planned.repeats,  # runs of each row: ``rows`` holds each row's runs, ``repeat`` 0 to K-1
        "rows": [],
        "flaky": [],  # rows whose repeats disagree on a 0/1 metric, with each repeat's value and outputs
        "flow_variants": _flow_variants(planned.target),  # moves to the flow's "variants" in the merged document
        "parity": plain(parity) if parity is not None else None,
    }
    if run is not None:
        from ..repeats import flaky
        from ..results import interval_fields, metrics_of

        metrics = metrics_of(run, evaluations)
        record["metrics"] = {k: float(v) for k, v in metrics.items()}
        record["aliases"] = dict(metrics.aliases)  # one name per metric in the reports; the flow's: metric_aliases
        record["intervals"] = interval_fields(metrics)
        record["rows"] = [_row(i, row, evaluations) for i, row in enumerate(run.rows)]
        record["flaky"] = plain(flaky(run, evaluations))
        record["ran_in"] = run.elsewhere  # a backend's remote run: its LLM spend and latency are not known here
    return record


def _flow_variants(target: Any) -> dict[str, Any]:
    """What each node variant of the cell's flow is (``variant_specs.describe_variants``), as plain data."""
    from ..variant_specs import describe_variants

    return plain(describe_variants(target.kind, target.folder, target.definition))


def _row(index: int, row: Any, evaluations: Sequence[Any]) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    for evaluation in evaluations:
        for name, value in (evaluation.scores[index] or {}).items():
            scores[f"{evaluation.evaluator}.{name}"] = plain(value)
    return {
        "index": row.index,
        "id": row.identity,
        "repeat": row.repeat,
        "data": plain(row.data),  # the row's own dicts, not copies, when they are plain
        "inputs": plain(row.inputs),
        "outputs": plain(row.outputs) if row.outputs is not None else None,
        "error": f"{row.error_type}: {row.error_message}" if row.failed else None,
        **_spent(row),
        "scores": scores,
        "calls": _calls(index, row, evaluations),
    }


def _spent(row: Any) -> dict[str, Any]:
    """The row's latency and LLM spend; None for each when it ran elsewhere (``Row.elsewhere``): not known here."""
    known = not row.elsewhere
    return {"latency": row.latency if known else None, "cached": row.cached,
            "llm_calls": row.llm_calls if known else None,
            "tokens": row.prompt_tokens + row.completion_tokens if known else None,
            "cost": row.cost if known else None}


def _calls(index: int, row: Any, evaluations: Sequence[Any]) -> list[dict[str, Any]]:
    """The row's LLM calls, whole: the flow's first, then each evaluator's (``evaluator`` names it)."""
    flow = [dict(plain(call.as_json()), evaluator=None) for call in row.calls]
    judged = [dict(plain(call.as_json()), evaluator=evaluation.evaluator)
              for evaluation in evaluations if evaluation.calls for call in evaluation.calls[index]]
    return flow + judged


def plain(value: Any) -> Any:
    """``value`` as JSON: containers kept, numbers and strings as their built-in types (a float
    subclass such as MetricValue would not cross to the xdist controller), anything else as text.
    A dict or list that is plain already is returned itself: a row's data is not held twice."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        pairs = [(str(k), plain(v)) for k, v in value.items()]
        if type(value) is dict and all(new[0] is old[0] and new[1] is old[1]
                                       for new, old in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    if isinstance(value, (list, tuple)):
        values = [plain(v) for v in value]
        return value if type(value) is list and all(new is old for new, old in zip(values, value, strict=True)) \
            else values
    return str(value)


def file_hash(path: Path) -> str:
    """The content hash of a dataset file (empty when it cannot be read), read once per file version
    however many items use the dataset."""
    try:
        stat = path.stat()
    except OSError:
        return ""
    return _hash(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _hash(path: str, mtime_ns: int, size: int) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def merge(records: Iterable[Mapping[str, Any]], primary_metrics: Mapping[str, str],
          environment: Mapping[str, Any]) -> dict[str, Any]:
    """The report document: flows sorted by name, each with its cells sorted by id and its best cell."""
    from ..metric_names import flow_aliases
    from .best import best_configuration, primary_metric

    cells: dict[tuple[str, str], dict[str, Any]] = {}
    # in item order, not arrival order (xdist's is arbitrary): the first record of a cell gives it its
    # metrics' order (hence the primary metric) and, on a clash, their values
    for record in sorted(records, key=lambda record: [item["nodeid"] for item in record["items"]]):
        key = (record["flow"], record["cell"])
        if key not in cells:
            cells[key] = {**record, "items": [], "verdicts": [], "metrics": {}, "aliases": {}, "intervals": {},
                          "rows": [], "flaky": []}
        _absorb(cells[key], record)
    flows = []
    for flow in sorted({flow for flow, _ in cells}):
        flow_cells = [_finish(cells[key]) for key in sorted(cells) if key[0] == flow]
        variants = [cell.pop("flow_variants", {}) for cell in flow_cells]
        metric = primary_metric(flow, flow_cells, primary_metrics)
        best = best_configuration(flow_cells, metric)
        flows.append({"flow": flow, "primary_metric": metric, "best": best.config, "best_reason": best.reason,
                      "selection": best.selection, "figures": best.figures,
                      "variants": next((v for v in variants if v), {}),
                      "metric_aliases": flow_aliases(flow_cells),
                      "cells": flow_cells})
    return {"schema_version": SCHEMA_VERSION, "environment": dict(environment), "flows": flows}


def _absorb(cell: dict[str, Any], record: Mapping[str, Any]) -> None:
    cell["items"].extend(record["items"])
    cell["verdicts"].extend(record["verdicts"])
    for name, value in record["metrics"].items():
        cell["metrics"].setdefault(name, value)
    for name, kept in record.get("aliases", {}).items():  # only where this record's numbers are the cell's
        if all(cell["metrics"].get(key) == record["metrics"].get(key) for key in (name, kept)):
            cell["aliases"].setdefault(name, kept)
    for name, value in record.get("intervals", {}).items():
        cell["intervals"].setdefault(name, value)
    cell["flaky"].extend(entry for entry in record.get("flaky", []) if entry not in cell["flaky"])
    if cell.get("parity") is None:  # the first item's that checked it
        cell["parity"] = record.get("parity")
    if not cell["rows"]:
        cell["rows"] = list(record["rows"])  # the record's rows themselves: a copy of one only when it changes
        return
    for index, (mine, theirs) in enumerate(zip(cell["rows"], record["rows"], strict=False)):  # a failed item has none
        scores = {name: value for name, value in theirs["scores"].items() if name not in mine["scores"]}
        known = {call["evaluator"] for call in mine.get("calls", [])}  # the flow's (None) and judges'
        added = [call for call in theirs.get("calls", []) if call["evaluator"] not in known]
        if scores or added:
            row = dict(mine, scores={**mine["scores"], **scores})
            if added:
                row["calls"] = [*mine.get("calls", []), *added]
            cell["rows"][index] = row


def _finish(cell: dict[str, Any]) -> dict[str, Any]:
    """Items and verdicts in a stable order, and the cell's outcome: the worst of its items'."""
    cell["items"].sort(key=lambda item: item["nodeid"])
    cell["verdicts"].sort(key=lambda v: (v["item"], v["metric"], v["op"], v["threshold"]))
    outcomes = [item["outcome"] for item in cell["items"]]
    cell["outcome"] = max(outcomes, key=OUTCOME_ORDER.index) if outcomes else "passed"
    return cell
