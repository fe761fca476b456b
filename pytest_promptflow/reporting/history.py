"""The report folder's history: a run of a subset (``-k``, ``--lf``, one file) adds to the last report, it
does not erase it.

- ``runs/<run id>/report.json`` is each run's own document (only the cells it ran); the newest KEEP_RUNS
  runs are kept, older ones deleted, so a CI artifact folder stays bounded.
- ``report.json`` (and the CSV and HTML files made from it) merges by cell: this run's cells replace the same
  cells, the previous report's other cells are kept. Every cell names the run, commit and time it comes
  from (``origin``); a kept one says so (``kept``). A kept cell whose dataset file or flow files changed
  since it ran, or are gone, is ``stale``: it stays in the tables, marked, and takes no part in choosing its
  flow's best. A Python callable's code is not fingerprinted: its cells name their commit.
- The read-merge-write holds a lock file (``runs/.lock``): two pytest processes writing one folder take turns,
  and every file is replaced whole (``scrub.write_text``), so a reader never meets half a report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from ..includes import is_litter
from ..scrub import write_json
from ..workflows.spec import is_workflow, split
from .records import file_hash, merge
from .schema import SCHEMA_VERSION

RUNS = "runs"
DOCUMENT = "report.json"
KEEP_RUNS = 20
LOCK = ".lock"
LOCK_TIMEOUT = 300  # seconds another process may hold the folder (its HTML of a big suite takes a while)
RUN_ID = re.compile(r"^[0-9a-zA-Z_.-]+$")
ORIGIN_FIELDS = ("run_id", "git_commit", "build_id", "time")


def write_history(document: Mapping[str, Any], folder: Path, primary_metrics: Mapping[str, str]) -> list[str]:
    """Write this run's document into ``runs/<run id>/`` and the merged report into ``folder``; returns the
    terminal lines that say what the report keeps from earlier runs (or why it could not merge)."""
    from filelock import FileLock, Timeout

    from . import files  # through the module: a conftest may wrap files.write_reports

    own = with_flow_hashes(stamped(document))
    run_file = run_document(folder, str(own["environment"].get("run_id") or "unknown"))
    (folder / RUNS).mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(folder / RUNS / LOCK), timeout=LOCK_TIMEOUT):
            write_json(run_file, own, indent=1)
            previous, problem = read_previous(folder / DOCUMENT)
            try:
                report = merged(previous, own, primary_metrics)
            except (KeyError, TypeError, AttributeError) as error:  # a report.json edited by hand, or truncated
                problem = (f"promptflow: {folder / DOCUMENT} could not be merged ({type(error).__name__}: {error}): "
                           "written anew, without earlier cells")
                report = merged(None, own, primary_metrics)
            files.write_reports(report, folder)
            prune(folder / RUNS, KEEP_RUNS)
    except Timeout:
        return [f"promptflow: {folder / RUNS / LOCK} stayed locked by another pytest for {LOCK_TIMEOUT} s: the report "
                f"folder was not updated; this run's document is {run_file}"]
    return ([problem] if problem else []) + kept_lines(report)


def run_document(folder: Path, run_id: str) -> Path:
    return folder / RUNS / run_id / DOCUMENT


def origin(environment: Mapping[str, Any]) -> dict[str, str]:
    """Which run a cell comes from: its run id, commit, CI build and time."""
    return {field: str(environment.get(field) or "") for field in ORIGIN_FIELDS}


def stamped(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` whose every cell names its origin (cells that already name one keep it)."""
    mine = origin(document.get("environment", {}))
    flows = [{**flow, "cells": [{"origin": mine, **cell} for cell in flow["cells"]]} for flow in document["flows"]]
    return {**document, "flows": flows}


def read_previous(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The report.json the folder held, or None and (if there was one) the line saying why it is replaced."""
    if not path.is_file():
        return None, ""
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, f"promptflow: {path} could not be read ({error}): written anew, without earlier cells"
    if not isinstance(previous, dict) or previous.get("schema_version") != SCHEMA_VERSION or not isinstance(
            previous.get("flows"), list):
        return None, (f"promptflow: {path} is not a schema_version {SCHEMA_VERSION} report: written anew, without "
                      "earlier cells")
    return previous, ""


def merged(previous: Mapping[str, Any] | None, current: Mapping[str, Any],
           primary_metrics: Mapping[str, str]) -> dict[str, Any]:
    """``current``'s cells, and ``previous``'s cells ``current`` did not run, marked kept (and stale when
    their dataset or flow changed since); each flow's best is chosen again, over its cells that are not stale."""
    current, previous = stamped(current), stamped(previous) if previous is not None else None
    ran = {(flow["flow"], cell["cell"]) for flow in current["flows"] for cell in flow["cells"]}
    hashes: dict[str, str] = {}  # a flow's files now, hashed once however many kept cells it has
    kept = [_kept(cell, hashes) for cell in cell_records(previous or {}) if (cell["flow"], cell["cell"]) not in ran]
    fresh = cell_records(current)
    environment = current["environment"]
    document = merge([*fresh, *(cell for cell in kept if "stale" not in cell)], primary_metrics, environment)
    stale = [cell for cell in kept if "stale" in cell]
    if stale:
        _add_stale(document, merge(stale, primary_metrics, environment))
    return document


def cell_records(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A document's cells as ``merge`` takes records: each with its flow's variants back as ``flow_variants``."""
    return [{**cell, "flow": flow["flow"], "flow_variants": flow.get("variants", {})}
            for flow in document.get("flows", []) for cell in flow["cells"]]


def _kept(cell: Mapping[str, Any], hashes: dict[str, str]) -> dict[str, Any]:
    """A cell of an earlier run, saying which, and whether its dataset or its flow changed since."""
    source = cell["origin"]
    commit = f"commit {source['git_commit'][:7]}, " if source.get("git_commit") else ""
    kept = {key: value for key, value in cell.items() if key != "stale"}  # judged again: the data may be back
    kept["kept"] = f"kept from run {source['run_id']} ({commit}{source.get('time') or 'time unknown'})"
    path = str(cell.get("dataset_path", ""))
    now = file_hash(Path(path)) if path else ""
    if not now:
        kept["stale"] = f"stale: its dataset {path} is gone since"
    elif cell.get("dataset_hash") and now != cell["dataset_hash"]:
        kept["stale"] = (f"stale: its dataset {path} changed since (sha256 {cell['dataset_hash'][:12]} then, "
                         f"{now[:12]} now)")
    elif cell.get("flow_hash"):
        source = str(cell.get("flow_source", ""))
        if source not in hashes:
            hashes[source] = flow_hash(source)
        if hashes[source] != cell["flow_hash"]:
            kept["stale"] = f"stale: its flow {source} changed since" if hashes[source] else \
                f"stale: its flow {source} is gone since"
    return kept


def with_flow_hashes(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` whose cells carry ``flow_hash``, the fingerprint of their flow's files as this run ran it."""
    hashes = {source: flow_hash(source) for source in {str(cell.get("flow_source", "")) for flow in document["flows"]
                                                       for cell in flow["cells"]}}
    flows = [{**flow, "cells": [{**cell, "flow_hash": hashes[str(cell.get("flow_source", ""))]}
                                for cell in flow["cells"]]} for flow in document["flows"]]
    return {**document, "flows": flows}


def flow_hash(source: str) -> str:
    """sha256 over the relative paths and bytes of a flow's files (its folder less run litter, or its .prompty
    file; a workflow's module's folder); "" for a callable (no source) or a flow that is gone."""
    path = Path(split(source)[0] if is_workflow(source) else source)
    if not source or not path.is_file():
        return ""
    root = path.parent
    files = [path] if path.suffix == ".prompty" else _files(root)
    digest = hashlib.sha256()
    try:
        for file in sorted(files):
            digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    except OSError:
        return ""
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    """The files under ``folder``, less what running a flow leaves (``__pycache__``, ``.promptflow``, ...)."""
    found = []
    for path in folder.iterdir():
        if is_litter(path):
            continue
        found += _files(path) if path.is_dir() else [path] if path.is_file() else []
    return found


def _add_stale(document: dict[str, Any], stale: Mapping[str, Any]) -> None:
    """Stale cells into their flows, after the others; a flow with only stale cells has no best."""
    flows = {flow["flow"]: flow for flow in document["flows"]}
    for flow in stale["flows"]:
        if flow["flow"] in flows:
            flows[flow["flow"]]["cells"].extend(flow["cells"])
        else:
            flows[flow["flow"]] = {**flow, "best": None, "selection": None,
                                   "best_reason": "every cell is stale (its dataset changed since it ran): run "
                                                  "them again"}
    document["flows"] = [flows[name] for name in sorted(flows)]


def kept_lines(document: Mapping[str, Any]) -> list[str]:
    """Per earlier run the report keeps cells of: how many, of which flows; then each stale cell."""
    by_run: dict[str, list[str]] = {}
    stale = []
    for flow in document["flows"]:
        for cell in flow["cells"]:
            if "kept" in cell:
                by_run.setdefault(cell["kept"], []).append(flow["flow"])
            if "stale" in cell:
                stale.append(f"promptflow:   {cell['cell']}: {cell['stale']}")
    lines = []
    for note, flows in by_run.items():
        counts = ", ".join(f"{name} {flows.count(name)}" for name in dict.fromkeys(flows))
        lines.append(f"promptflow: report.json keeps {len(flows)} cell{'s' * (len(flows) != 1)} this run did not "
                     f"run, {note}: {counts}")
    if stale:
        lines.append(f"promptflow: {len(stale)} kept cell{'s' * (len(stale) != 1)} no longer match their data "
                     "(shown, not chosen as best; run them again):")
    return lines + stale


def prune(runs: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` run folders (by when they were written); returns those deleted."""
    old = known_runs(runs)[keep:]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def known_runs(runs: Path) -> list[Path]:
    """The run folders under ``runs`` that hold a document, newest first."""
    try:
        found = [path for path in runs.iterdir() if RUN_ID.match(path.name) and (path / DOCUMENT).is_file()]
    except OSError:
        return []
    return sorted(found, key=lambda path: (os.stat(path / DOCUMENT).st_mtime_ns, path.name), reverse=True)


def own_cells(document: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with only the cells its own run ran (a merged report.json less its kept cells): what a
    gate may read without mixing runs."""
    run = document.get("environment", {}).get("run_id")
    flows = [{**flow, "cells": cells} for flow in document["flows"]
             if (cells := [cell for cell in flow["cells"] if _ran_in(cell, run)])]
    return {**document, "flows": flows}


def _ran_in(cell: Mapping[str, Any], run: Any) -> bool:
    return "kept" not in cell and cell.get("origin", {}).get("run_id", run) == run


def find_document(text: str, folder: Path | None) -> Path:
    """The report.json ``text`` names: a report.json path, a report folder, or a run id (or the start of one)
    under ``folder``'s runs/; one line naming the known runs when it names none."""
    from ..errors import SpecError

    path = Path(text)
    if path.is_file():
        return path
    if path.is_dir() and (path / DOCUMENT).is_file():
        return path / DOCUMENT
    if folder is None:
        raise SpecError(None, f"{text!r} is no report.json, report folder or run id of a known report folder",
                        "pass --report-dir DIR (a pytest --promptflow-report folder) or set promptflow_report")
    runs = known_runs(folder / RUNS)
    matches = [run for run in runs if run.name == text] or [run for run in runs if run.name.startswith(text)]
    if len(matches) == 1:
        return matches[0] / DOCUMENT
    names = ", ".join(run.name for run in (matches or runs)[:KEEP_RUNS])
    if matches:
        raise SpecError(None, f"{text!r} starts {len(matches)} run ids in {folder / RUNS}", f"give more of it: {names}")
    raise SpecError(None, f"no run {text!r} in {folder / RUNS}",
                    f"known runs, newest first: {names}" if runs else "no run has written there yet: run pytest "
                    f"--promptflow-report {folder} first")
