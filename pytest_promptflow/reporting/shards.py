"""``pytest-promptflow merge``: the reports of a suite's shards (``--promptflow-shard I/N``) as one document,
the one an unsharded run would have written: cells joined by (flow, cell), each flow's best chosen again over
all its cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..shard import Shard, parse_shard
from .history import DOCUMENT, cell_records, own_cells
from .records import merge
from .schema import problem

FAILED_OUTCOMES = ("failed", "error")


def read_shard(text: str) -> tuple[Path, dict[str, Any] | None, str]:
    """(report.json path, its own cells' document or None, the line saying why it is none) of a shard's report
    folder or report.json. Own cells only: a folder reused across runs also keeps earlier runs' cells."""
    path = Path(text)
    path = path / DOCUMENT if path.is_dir() else path
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return path, None, f"pytest-promptflow merge: {path} could not be read ({error}): a shard with no cells " \
                           "writes none, a crashed one neither; left out"
    wrong = problem(document)
    if wrong:
        return path, None, f"pytest-promptflow merge: {path}: {wrong}; left out"
    return path, own_cells(document), ""


def shard_failed(document: Mapping[str, Any]) -> str:
    """Why the shard's session failed ("" when it passed): its exit status, else a failed cell."""
    environment = document.get("environment", {})
    status = environment.get("exit_status")
    if status is not None:
        return f"exit status {status}" if status != 0 else ""
    failed = [cell["cell"] for flow in document["flows"] for cell in flow["cells"]
              if cell.get("outcome") in FAILED_OUTCOMES]
    return f"cells {', '.join(failed)} failed" if failed else ""


def merge_shards(shards: Sequence[tuple[Path, Mapping[str, Any]]]) -> tuple[dict[str, Any], list[str]]:
    """The merged document, and one line per cell that two shards ran (the first shard's is kept) and per
    shard whose session failed."""
    lines: list[str] = []
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], Path] = {}
    for path, document in shards:
        for record in cell_records(document):
            key = (record["flow"], record["cell"])
            if key in seen:
                lines.append(f"pytest-promptflow merge: cell {record['cell']} of flow {record['flow']} is in "
                             f"{seen[key]} and {path}: kept {seen[key]}'s (were the shards I/N of one N?)")
                continue
            seen[key] = path
            records.append(record)
        why = shard_failed(document)
        if why:
            lines.append(f"pytest-promptflow merge: shard {_shard_name(document)} ({path}) failed: {why}")
    environment = {**(shards[0][1].get("environment", {}) if shards else {}),
                   "shards": [{"path": str(path), **_shard_facts(document)} for path, document in shards]}
    environment.pop("shard", None)
    return merge(records, _agreed_primary_metrics([document for _, document in shards]), environment), lines


def _shard_name(document: Mapping[str, Any]) -> str:
    return str(document.get("environment", {}).get("shard") or "unsharded")


def _shard_facts(document: Mapping[str, Any]) -> dict[str, Any]:
    environment = document.get("environment", {})
    return {"shard": environment.get("shard"), "run_id": environment.get("run_id"),
            "exit_status": environment.get("exit_status"), "failed": shard_failed(document) or None}


def _agreed_primary_metrics(documents: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each flow's primary metric where every shard that ran the flow chose the same (the configured one always
    is); elsewhere ``merge`` chooses it again, as an unsharded run would."""
    chosen: dict[str, set[str | None]] = {}
    for document in documents:
        for flow in document["flows"]:
            chosen.setdefault(flow["flow"], set()).add(flow.get("primary_metric"))
    agreed = {}
    for flow, metrics in chosen.items():
        metric = metrics.pop() if len(metrics) == 1 else None
        if metric is not None:
            agreed[flow] = metric
    return agreed


def incomplete(shards: Sequence[Mapping[str, Any]]) -> str:
    """Why a merged document (its ``environment.shards``) may not be released, "" when it may: a shard that did
    not pass, shards of different splits, or a shard I/N whose report was not merged."""
    for shard in shards:
        if shard.get("exit_status") != 0:
            return (f"shard {shard.get('shard') or '(unsharded)'} ({shard['path']}) did not pass "
                    f"(exit status {shard.get('exit_status')}): release only when every shard passed")
    try:
        merged = {parse_shard(str(shard["shard"])) for shard in shards if shard.get("shard")}
    except ValueError as error:
        return str(error)
    if not merged:
        return ""  # unsharded reports, merged
    totals = {shard.total for shard in merged}
    if len(totals) > 1 or len(merged) < len(shards):
        return (f"the merged reports are of different splits ({', '.join(str(s.get('shard')) for s in shards)}): "
                "merge the shards of one run")
    total = totals.pop()
    missing = [str(Shard(number, total)) for number in range(1, total + 1) if Shard(number, total) not in merged]
    if missing:
        return (f"shard {', '.join(missing)} is missing (merged: {', '.join(sorted(map(str, merged)))}): "
                "merge every shard's report, a shard that wrote none ran no cell or crashed")
    return ""
