"""Where a baseline's rows come from: another cell of the experiment, a previous ``rows.csv``, or the release.

Each source yields a ``pairing.Side``: per row identity, the row's scores (``<evaluator>.<score>``), whether its
flow failed and its outputs. ``comparer`` puts a cell and its declared baseline together for ``thresholds.check``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

from .config import BaselineSpec
from .errors import SpecError, Where
from .pairing import Comparer, ComparisonSettings, ScoredRow, Side, side_of_run

SETTINGS = pytest.StashKey[ComparisonSettings]()
CELL, RELEASED = "cell:", "released"
_FORMS = "write cell:<configuration>, released, or the path of a previous report's rows.csv (path#<configuration>)"

#: scores a planned cell's run as its item does: (planned cell, run) -> evaluations
Evaluate = Callable[[Any, Any], Sequence[Any]]


def settings_of(config: pytest.Config) -> ComparisonSettings:
    """The session's comparison settings (plugin.py parses them from the options and ini)."""
    return config.stash.get(SETTINGS, ComparisonSettings())


def parse_baseline(text: Any, base_dir: Path, where: Where | None) -> BaselineSpec:
    """``cell:<configuration>``, ``released``, or a rows.csv path relative to ``base_dir`` (a report folder
    stands for its rows.csv), optionally ``#<configuration>``; a file that is not there is one line."""
    raw = "" if text is None or isinstance(text, (dict, list)) else str(text).strip()
    if not raw:
        raise SpecError(where, f"baseline {text!r} is not a baseline", _FORMS)
    if raw == RELEASED:
        return BaselineSpec(raw, "released", where=where)
    if raw.startswith(CELL):
        if not raw.removeprefix(CELL).strip():
            raise SpecError(where, f"baseline {raw!r} names no configuration",
                            "write cell:<configuration> as report.json's config shows it, e.g. cell:defaults")
        return BaselineSpec(raw, "cell", raw.removeprefix(CELL).strip(), where=where)
    location, _, config = raw.partition("#")
    path = Path(os.path.normpath(base_dir / location))
    path = path / "rows.csv" if path.is_dir() else path
    if not path.is_file():
        raise SpecError(where, f"baseline {raw!r}: no rows.csv at {path}",
                        f"point it (relative to {base_dir}) at the rows.csv a run with --promptflow-report wrote, "
                        "or use cell:<configuration> or released")
    return BaselineSpec(raw, "rows", config.strip(), path.resolve(), where)


def comparer(spec: BaselineSpec, session: Any, planned: Any, run: Any, evaluations: Sequence[Any],
             evaluate: Evaluate, settings: ComparisonSettings) -> Comparer:
    """The ``compare`` of one cell's thresholds against ``spec``; the baseline is read only when a threshold asks."""
    candidate = side_of_run(f"cell {planned.id}", run, evaluations)
    evaluators = list(dict.fromkeys(ev.evaluator for ev in evaluations))
    stored = None if spec.kind == "cell" else (lambda side: rescored(side, planned, run, evaluate))
    aliases: dict[str, str] = {}
    for ev in evaluations:  # a logged metric pairs on the column it is the mean of; its short name is the first's
        for metric, column in ev.aliases.items():
            aliases.setdefault(metric, f"{ev.evaluator}.{column}")
            aliases[f"{ev.evaluator}.{metric}"] = f"{ev.evaluator}.{column}"
    return Comparer(spec, candidate, evaluators, lambda: baseline_side(spec, session, planned, evaluate, settings),
                    settings, planned.id, stored, aliases)


def baseline_side(spec: BaselineSpec, session: Any, planned: Any, evaluate: Evaluate,
                  settings: ComparisonSettings) -> Side:
    """The baseline's rows for ``planned``'s flow and dataset."""
    cell = planned.cell
    if spec.kind == "cell":
        other = sibling(planned, spec.config, spec.where)
        run = session.run(other)
        return side_of_run(f"baseline {spec.text} (cell {other.id})", run, evaluate(other, run))
    if spec.kind == "released":
        path = settings.released(cell.flow, cell.dataset.name) if settings.released else None
        if path is None:
            raise SpecError(spec.where, f"no released version of flow {cell.flow} has stored rows of dataset "
                            f"{cell.dataset.name}", "release it first (pytest --promptflow-release), or compare "
                            "with cell:<configuration> or a previous rows.csv")
        try:
            return csv_side(path, cell.flow, cell.dataset.name, "", "", spec.text, spec.where)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)  # the registry's download folder
    assert spec.path is not None
    return csv_side(spec.path, cell.flow, cell.dataset.name, spec.config, cell.config, spec.text, spec.where)


def rescored(side: Side, planned: Any, run: Any, evaluate: Evaluate) -> Side:
    """A stored baseline's outputs scored by the cell's current evaluators, for when its stored scores lack the
    one compared (the evaluator changed since). Each stored row gets the current dataset row of its identity;
    rows the baseline lacks are scored as failed and left out again, so they count as unpaired."""
    from .engine import Run

    stored = {row.identity: row for row in side.rows}
    rows = []
    for row in run.rows:
        old = stored.get(row.identity)
        outputs = None if old is None or old.failed else old.outputs
        failed = outputs is None
        rows.append(dataclasses.replace(row, outputs=outputs, error_type="BaselineRow" if failed else None,
                                        error_message="failed or missing in the baseline" if failed else None))
    baseline_run = Run(planned.cell, tuple(rows), 0.0)
    scored = side_of_run(f"{side.label}, rescored", baseline_run, evaluate(planned, baseline_run))
    return Side(scored.label, tuple(row for row in scored.rows if row.identity in stored))


# -- another cell ------------------------------------------------------------------------------------------------


def sibling(planned: Any, config: str, where: Where | None) -> Any:
    """The planned cell of the same experiment and dataset with configuration ``config`` (whether or not
    ``--promptflow-variants`` selected it); one line naming the configurations there are when none has it."""
    from .matrix import default_variants, expand

    target, spec = planned.target, planned.spec
    node_variants = target.node_variants()
    variants = spec.variants or default_variants(node_variants, spec.where)
    cells = [dataclasses.replace(cell, init=planned.cell.init)
             for cell in expand(target.name, variants, node_variants, [planned.cell.dataset])]
    for cell in cells:
        if cell.config == config:
            return dataclasses.replace(planned, cell=cell)
    labels = [cell.config for cell in cells]
    close = difflib.get_close_matches(config, labels, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise SpecError(where, f"baseline cell:{config}: flow {target.name} has no configuration {config!r} on dataset "
                    f"{planned.cell.dataset.name}", f"{hint}its configurations: {', '.join(labels)}")


# -- a previous rows.csv -----------------------------------------------------------------------------------------


def csv_side(path: Path, flow: str, dataset: str, wanted: str, own: str, text: str, where: Where | None) -> Side:
    """The rows of ``flow`` on ``dataset`` in a report's rows.csv, of configuration ``wanted``; when none is named,
    of this cell's own configuration, else of the configuration that report's metrics.csv marks best, else of
    its only one."""
    from .reporting.csv_files import CELL_COLUMNS, ROW_COLUMNS

    rows = _read(path, where)
    mine = [row for row in rows if row.get("flow") == flow and row.get("dataset") == dataset]
    if not mine:
        found = sorted({f"flow {row.get('flow')} on {row.get('dataset')}" for row in rows})
        raise SpecError(where, f"baseline {text}: {path} has no rows of flow {flow} on dataset {dataset}",
                        f"compare on the same data; it has {', '.join(found[:5]) or 'no rows'}")
    configs = list(dict.fromkeys(row.get("config", "") for row in mine))
    config = _chosen(configs, wanted, own, _best(path, flow, dataset), path, text, where)
    fixed = {*CELL_COLUMNS, *ROW_COLUMNS, "index", "id", "repeat"}
    scored = []
    for row in (row for row in mine if row.get("config", "") == config):
        scores = {key: _value(value) for key, value in row.items()
                  if key not in fixed and not key.startswith(("data.", "inputs.", "outputs."))}
        outputs = {key.removeprefix("outputs."): _output(v) for key, v in row.items() if key.startswith("outputs.")}
        repeat = int(row["repeat"]) if str(row.get("repeat") or "").isdigit() else 0
        scored.append(ScoredRow(_text(row.get("id", "")), scores, bool(row.get("error")), outputs, repeat))
    return Side(f"baseline {text} ({config} in {path.name})", tuple(scored))


def _read(path: Path, where: Where | None) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SpecError(where, f"baseline: cannot read {path} ({error})", "point it at a report's rows.csv") from None
    if rows and not {"flow", "dataset", "config", "id"} <= set(rows[0]):
        raise SpecError(where, f"baseline: {path} is not a report's rows.csv (no flow, config, dataset and id "
                        "columns)", "point it at the rows.csv a run with --promptflow-report wrote")
    return rows


def _chosen(configs: list[str], wanted: str, own: str, best: str | None, path: Path, text: str,
            where: Where | None) -> str:
    if wanted:
        if wanted not in configs:
            raise SpecError(where, f"baseline {text}: {path} has no configuration {wanted!r} of this flow and "
                            "dataset", f"its configurations: {', '.join(configs)}")
        return wanted
    for choice in (own, best):
        if choice in configs:
            return choice
    if len(configs) == 1:
        return configs[0]
    raise SpecError(where, f"baseline {text}: {path} holds {len(configs)} configurations of this flow and dataset, "
                    "none of them this cell's or marked best", f"name one as {text}#<configuration>, one of: "
                    f"{', '.join(configs)}")


def _best(rows_csv: Path, flow: str, dataset: str) -> str | None:
    """The configuration the metrics.csv beside a rows.csv marks best for this flow and dataset."""
    try:
        with (rows_csv.parent / "metrics.csv").open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("flow") == flow and row.get("dataset") == dataset and row.get("best") == "True":
                    return row.get("config")
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return None


def _text(value: str) -> str:
    """A CSV field as written: reports.csv_files.safe puts ``'`` before text a spreadsheet would run."""
    from .reporting.csv_files import FORMULA_STARTS

    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_STARTS) else value


def _output(value: str) -> Any:
    """A flow output from a CSV field: csv_files writes lists and mappings as JSON."""
    if value.startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return _value(value)


def _value(value: str) -> Any:
    """A score from a CSV field: a number when it is one, None when empty, else the text."""
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    try:
        return float(value)
    except ValueError:
        return _text(value)
