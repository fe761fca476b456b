"""A cell's migrated twin: ``twin=`` runs another flow on the cell's rows, ``twin_of=`` reads the original's rows
from a stored report; either way both are scored alike and ``parity.parity`` checks them.

``twin=`` takes any flow spec ``load_target`` takes (a DAG, a flex flow, a callable, a ``maf:`` workflow), so
parity is the same for every kind. ``twin_of=`` reads report.json only: with a twin that needs no promptflow (a
callable, a workflow), nothing here imports it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .config import TwinSpec
from .errors import SpecError, Where
from .parity import Parity, Version, parity, version_of_cell, version_of_run

REPORT = "report.json"
_TWIN_OF_FIX = ("point twin_of at a report folder or its report.json (relative to the project root, or to the "
                "experiment file), optionally #<flow> or #<flow>:<configuration>")

#: scores a run as the cell's item does: (planned cell, run) -> evaluations
Evaluate = Callable[[Any, Any], Sequence[Any]]


def parse_twin(twin: Any, twin_of: Any, base_dir: Path, where: Where | None) -> TwinSpec | None:
    """``twin=`` (a flow spec) or ``twin_of=`` (a stored report), not both; a report that is not there is one line."""
    from .flows import check_flow

    if twin is None and twin_of is None:
        return None
    if twin is not None and twin_of is not None:
        raise SpecError(where, "twin and twin_of are both given", "twin= names the migrated flow to run beside this "
                        "one; twin_of= makes this flow the twin of a stored report's rows: give one")
    if twin is not None:
        check_flow(twin, where)
        text = str(twin) if isinstance(twin, (str, Path)) else getattr(twin, "__qualname__", repr(twin))
        return TwinSpec(text, flow=twin, base_dir=base_dir, where=where)
    raw = str(twin_of).strip() if isinstance(twin_of, (str, Path)) else ""
    location, _, selected = raw.partition("#")
    path = Path(os.path.normpath(base_dir / location)) if location else None
    path = path / REPORT if path is not None and path.is_dir() else path
    if path is None or not path.is_file():
        raise SpecError(where, f"twin_of {twin_of!r}: no report.json at {path}", _TWIN_OF_FIX)
    flow, _, config = selected.partition(":")
    return TwinSpec(raw, report=path.resolve(), original=flow.strip(), config=config.strip(), where=where)


def check_parity(session: Any, planned: Any, run: Any, evaluations: Sequence[Any], evaluate: Evaluate,
                 margin: float, max_unpaired: float) -> Parity:
    """The parity of ``planned``'s run and its twin (``planned.spec.twin``), each scored by ``evaluate``."""
    spec = planned.spec.twin
    unseen = requests_unseen(session, planned, run)
    if spec.report is not None:  # this flow is the twin
        this = version_of_run(f"twin {planned.target.name}", run, evaluations)
        return parity(stored_original(spec, planned, run, this, evaluate), this, margin, max_unpaired, unseen)
    this = version_of_run(f"flow {planned.target.name}", run, evaluations)
    twin_planned = twin_cell(session, planned, spec)
    twin_run = session.run(twin_planned)
    twin = version_of_run(f"twin {twin_planned.target.name}", twin_run, evaluate(planned, twin_run))
    return parity(this, twin, margin, max_unpaired, unseen)


def requests_unseen(session: Any, planned: Any, run: Any) -> str:
    """Why ``run``'s LLM requests were not seen by this session ('' when they were): its rows are a deployment's
    answers (the endpoint test), or they ran in a remote run (a backend's)."""
    answers = getattr(session, "answers", None)
    if answers is not None and answers.target(planned.target, planned.cell.dataset.name) is not None:
        return f"{planned.target.name}'s rows are its deployment's answers"
    if run.elsewhere:
        return f"{planned.target.name}'s rows ran in {run.elsewhere}"
    return ""


def twin_cell(session: Any, planned: Any, spec: TwinSpec) -> Any:
    """The twin's cell on the same dataset (mappings, rows, repeats, connections): its default configuration."""
    from .matrix import Cell

    target = session.target(spec.flow, spec.base_dir, spec.where)
    defaults = tuple((node, default) for node, (default, _) in target.node_variants().items())
    cell = Cell(target.name, defaults, (), planned.cell.dataset)
    return dataclasses.replace(planned, target=target, cell=cell, init=target.default_init() or None)


# -- twin_of: the original's stored rows ---------------------------------------------------------------------------


def stored_original(spec: TwinSpec, planned: Any, run: Any, twin: Version, evaluate: Evaluate) -> Version:
    """The stored cell of the original on this dataset; scored afresh by this test's evaluators when the report
    lacks a score the twin has (its evaluators changed since)."""
    assert spec.report is not None
    document = _read(spec.report, spec.where)
    flow = _original_flow(document, spec, planned)
    cell = _original_cell(flow, spec, planned.cell.dataset.name)
    original = version_of_cell(f"stored flow {flow['flow']} ({cell['config']} in {spec.report.name})", cell)
    if all(_has(original, key) for row in twin.scores.rows for key in row.scores):
        return original
    from .baseline import rescored

    return dataclasses.replace(original, scores=rescored(original.scores, planned, run, evaluate))


def _has(version: Version, key: str) -> bool:
    return any(key in row.scores for row in version.scores.rows)


def _read(path: Path, where: Where | None) -> Mapping[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise SpecError(where, f"twin_of: cannot read {path} ({error})", _TWIN_OF_FIX) from None
    if not isinstance(document, Mapping) or not isinstance(document.get("flows"), list):
        raise SpecError(where, f"twin_of: {path} is not a report.json (no flows)", _TWIN_OF_FIX)
    return document


def _original_flow(document: Mapping[str, Any], spec: TwinSpec, planned: Any) -> Mapping[str, Any]:
    """The flow named after ``#``, else the report's only flow (other than this one) with rows on this dataset."""
    dataset = planned.cell.dataset.name
    flows = [flow for flow in document["flows"]
             if any(cell.get("dataset") == dataset and cell.get("rows") for cell in flow.get("cells") or [])]
    names = [flow["flow"] for flow in flows]
    if spec.original:
        if spec.original not in names:
            raise SpecError(spec.where, f"twin_of {spec.text}: no flow {spec.original} with rows of dataset {dataset}",
                            f"its flows with rows of {dataset}: {', '.join(names) or 'none'}")
        return flows[names.index(spec.original)]
    others = [flow for flow in flows if flow["flow"] != planned.target.name] or flows
    if len(others) != 1:
        raise SpecError(spec.where, f"twin_of {spec.text}: {len(others)} flows of the report have rows of dataset "
                        f"{dataset}", f"name one: {spec.text.partition('#')[0]}#<flow>, one of "
                        f"{', '.join(names) or 'none'}")
    return others[0]


def _original_cell(flow: Mapping[str, Any], spec: TwinSpec, dataset: str) -> Mapping[str, Any]:
    """The configuration named after ``<flow>:``, else the flow's best, else its only one on this dataset."""
    cells = [cell for cell in flow.get("cells") or [] if cell.get("dataset") == dataset and cell.get("rows")]
    configs = [cell.get("config") for cell in cells]
    wanted = spec.config or (flow.get("best") if flow.get("best") in configs else "")
    if wanted in configs:
        return cells[configs.index(wanted)]
    if not spec.config and len(cells) == 1:
        return cells[0]
    raise SpecError(spec.where, f"twin_of {spec.text}: flow {flow['flow']} has "
                    f"{'no configuration ' + repr(spec.config) if spec.config else f'{len(cells)} configurations'} "
                    f"with rows of dataset {dataset}",
                    f"name one as #{flow['flow']}:<configuration>, one of: {', '.join(map(str, configs))}")
