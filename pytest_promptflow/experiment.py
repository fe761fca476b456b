"""experiment.yaml (+ overlays) -> ExperimentSpec, every error naming file:line.

The format is the GenAIOps prompt-flow template's (name, flow, connections, datasets,
evaluators) plus our keys ``variants``, ``thresholds`` and ``baseline``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .config import (
    _MAPPING_FIX,
    REPEAT_FIX,
    STRATEGIES,
    BaselineSpec,
    ConnectionSpec,
    DatasetSpec,
    EvaluatorSpec,
    ExperimentSpec,
    TwinSpec,
    VariantsSpec,
    parse_mapping,
    parse_repeat,
)
from .errors import SpecError, Where
from .project_root import check_inside
from .thresholds import Threshold
from .thresholds import parse as parse_threshold
from .workflows.spec import is_workflow
from .workflows.spec import parse as parse_workflow

# runtime (the template's Azure ML runtime name) is accepted and ignored: runs are local
TOP_KEYS = ("name", "flow", "connections", "datasets", "evaluators", "runtime", "variants", "thresholds", "init",
            "baseline", "repeat", "twin", "twin_of")
DATASET_KEYS = ("name", "source", "description", "mappings")
EVALUATOR_KEYS = ("name", "flow", "datasets", "init")
EVALUATOR_DATASET_KEYS = ("name", "reference", "source", "description", "mappings")
VARIANTS_KEYS = ("strategy", "nodes", "overrides")
FLOW_FILES = ("flow.dag.yaml", "flow.dag.yml", "flow.flex.yaml", "flow.flex.yml")
CONNECTION_ALIASES = {"api_endpoint": "api_base"}
#: promptflow.connections' types (read without importing promptflow: collection stays cheap)
CONNECTION_TYPES = ("AzureOpenAIConnection", "OpenAIConnection", "CustomConnection", "CustomStrongTypeConnection",
                    "AzureContentSafetyConnection", "SerpConnection", "CognitiveSearchConnection",
                    "FormRecognizerConnection", "ServerlessConnection", "AzureAIServicesConnection")

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OVERRIDE_KEY = re.compile(r"^nodes\.[^.\s]+\.\S+$")


def is_experiment_file(path: Path) -> bool:
    """Whether ``path`` is an experiment to collect, judged by its name and its siblings.

    True for names that start with ``experiment`` and end ``.yaml``/``.yml`` (``experiment.yaml``,
    ``experiment_large.yml``), except environment overlays: ``experiment.pr.yaml`` is the ``pr``
    overlay of ``experiment.yaml`` when that file exists beside it (``foo.<env>.yaml`` overlays
    ``foo.yaml``, same suffix), so it is read through ``load_experiment(..., env="pr")`` instead.
    """
    path = Path(path)
    if not path.name.startswith("experiment") or path.suffix not in (".yaml", ".yml"):
        return False
    base, dot, _env = path.stem.rpartition(".")
    return not (dot and path.with_name(base + path.suffix).is_file())


def overlay_envs(path: Path) -> set[str]:
    """The envs that have an overlay beside the experiment file ``path``: ``pr`` for ``experiment.pr.yaml``."""
    path = Path(path)
    prefix = f"{path.stem}."
    return {sibling.name[len(prefix):-len(path.suffix)] for sibling in path.parent.glob(f"{path.stem}.?*{path.suffix}")
            if sibling.is_file()}


def load_experiment(path: Path, env: str | None = None, root: Path | None = None) -> ExperimentSpec:
    """Read an experiment.yaml (GenAIOps template format + our keys), with the ``env`` overlay applied.

    Paths are relative to the file's folder. An overlay ``<stem>.<env><suffix>`` beside the file
    replaces each top-level key it has, whole (``evaluators:`` left empty clears them). As in the
    template, an environment without an overlay uses the base file: one ``--promptflow-env dev``
    serves use cases that need a dev overlay and ones that do not. Given a ``root``, the flow, data and
    evaluators must be inside it.
    Every problem is a SpecError naming file:line and the fix.
    """
    path = Path(path)
    sections = _sections(path, _read_yaml(path), overlay=False)
    if env:
        overlay = path.with_name(f"{path.stem}.{env}{path.suffix}")
        if overlay.is_file():
            sections.update(_sections(overlay, _read_yaml(overlay), overlay=True))
    for key, example in (("flow", "flows/<flow folder>"), ("datasets", "a list of '- name: ..., source: ...'")):
        if key not in sections:
            raise SpecError(Where(path), f"experiment is missing required key {key!r}", f"add '{key}: {example}'")
    base_dir = path.parent
    name = sections["name"].text("experiment") if "name" in sections else path.absolute().parent.name
    flow_src = sections["flow"]
    flow = _experiment_flow(flow_src.text("experiment"), base_dir, flow_src.where, root)
    connections = _connections(sections["connections"]) if "connections" in sections else ()
    datasets = _datasets(sections["datasets"], base_dir, root)
    standard = {spec.name: spec for spec in datasets}
    evaluators = _evaluators(sections["evaluators"], base_dir, standard, root) if "evaluators" in sections else ()
    variants = _variants(sections["variants"], is_workflow(flow)) if "variants" in sections else None
    thresholds = _thresholds(sections["thresholds"]) if "thresholds" in sections else ()
    init = _init(sections["init"].path, sections["init"].node, "init", "experiment") if "init" in sections else {}
    baseline = _baseline(sections["baseline"]) if "baseline" in sections else None
    repeat = _repeat(sections["repeat"]) if "repeat" in sections else None
    return ExperimentSpec(name, flow, datasets, evaluators, connections, variants, thresholds, Where(path), init,
                          baseline, repeat, _twin(sections))


# --- reading and locating -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Src:
    """One key of a round-trip YAML mapping, with the file it came from (base or overlay)."""

    path: Path
    node: Any
    key: Any

    @property
    def value(self) -> Any:
        return self.node[self.key]

    @property
    def where(self) -> Where:
        return _at(self.path, self.node, self.key)

    def text(self, what: str) -> str:
        return _text(self.path, self.node, self.key, what)  # type: ignore[return-value]


def _read_yaml(path: Path) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(Where(path), "file not found", "check the path") from None
    except UnicodeDecodeError as exc:
        raise SpecError(Where(path), f"not UTF-8 text ({exc.reason})", "save the file as UTF-8") from None
    except OSError as exc:
        raise SpecError(Where(path), f"cannot read the file ({exc.strerror})", "check its permissions") from None
    try:
        return YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[-1]
        raise SpecError(Where(path, mark.line + 1 if mark else None), f"YAML syntax error: {problem}",
                        "fix the YAML at that line (indentation, quotes, a missing ':' or ']')") from None


def _at(path: Path, node: Any, key: Any = None) -> Where:
    """The 1-based line of ``key`` in a round-trip mapping, of item ``key`` in a sequence, or of ``node``."""
    lc: Any = getattr(node, "lc", None)
    try:
        if key is not None and isinstance(node, dict) and key in node:
            return Where(path, lc.key(key)[0] + 1)
        if isinstance(key, int) and isinstance(node, list):
            return Where(path, lc.item(key)[0] + 1)
        return Where(path, lc.line + 1)
    except (AttributeError, KeyError, IndexError, TypeError):
        return Where(path)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _plain(value: Any) -> Any:
    """Round-trip YAML values as plain Python (dict, list, bool, int, float, str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _check_keys(path: Path, node: Any, allowed: tuple[str, ...], required: tuple[str, ...], what: str) -> None:
    for key in node:
        if key not in allowed:
            raise SpecError(_at(path, node, key), f"unknown key {key!r} in {what}",
                            f"{_did_you_mean(key, allowed)}allowed keys: {', '.join(allowed)}")
    _require(path, node, required, what)


def _require(path: Path, node: Any, required: tuple[str, ...], what: str) -> None:
    for key in required:
        if key not in node:
            raise SpecError(_at(path, node), f"{what} is missing required key {key!r}", f"add '{key}: ...'")


def _text(path: Path, node: Any, key: Any, what: str) -> str | None:
    """A non-empty scalar as text; None when the key is absent."""
    if key not in node:
        return None
    value = node[key]
    if value is None or isinstance(value, (dict, list)) or not str(value).strip():
        raise SpecError(_at(path, node, key), f"{what}: {key!r} must be a non-empty value, got {_kind(value)}",
                        f"write '{key}: <text>'")
    return str(value).strip()


def _mapping_node(path: Path, node: Any, key: Any, what: str) -> dict[Any, Any]:
    value = node[key]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(_at(path, node, key), f"{what}: {key!r} must be a mapping, got {_kind(value)}",
                        f"write '{key}:' followed by indented 'name: value' lines")
    return value


def _list_node(path: Path, node: Any, key: Any, what: str, example: str, *, empty_ok: bool) -> list[Any]:
    value = node[key]
    if value is None and empty_ok:
        return []
    if not isinstance(value, list):
        raise SpecError(_at(path, node, key), f"{what}: {key!r} must be a list, got {_kind(value)}",
                        f"write '{key}:' followed by '- {example}' items")
    if not value and not empty_ok:
        raise SpecError(_at(path, node, key), f"{what}: {key!r} is empty", f"add at least one '- {example}' item")
    return value


def _item(path: Path, items: list[Any], index: int, what: str, keys: tuple[str, ...]) -> dict[Any, Any]:
    item = items[index]
    if not isinstance(item, dict):
        raise SpecError(_at(path, items, index), f"{what} must be a mapping, got {_kind(item)}",
                        f"write '- {keys[0]}: ...' with keys {', '.join(keys)}")
    return item


def _sections(path: Path, doc: Any, *, overlay: bool) -> dict[str, _Src]:
    if doc is None and overlay:
        return {}
    if not isinstance(doc, dict):
        raise SpecError(_at(path, doc), f"the top level must be a mapping of keys, got {_kind(doc)}",
                        f"write keys such as {', '.join(TOP_KEYS[:5])}")
    _check_keys(path, doc, TOP_KEYS, (), "experiment")
    return {key: _Src(path, doc, key) for key in doc}


def _resolve(base_dir: Path, raw: str) -> Path:
    return Path(os.path.normpath(os.path.abspath(base_dir / raw)))


def _experiment_flow(raw: str, base_dir: Path, where: Where, root: Path | None) -> Path | str:
    """The experiment's flow: a path as ``_flow_path`` reads it, or a workflow (``maf:module.py:factory``,
    given back with the module's absolute path)."""
    if not is_workflow(raw):
        return _flow_path(raw, base_dir, where, "flow", root)
    workflow = parse_workflow(raw, base_dir, where)
    check_inside(workflow.path, root, where, "flow")
    return str(workflow)


def _flow_path(raw: str, base_dir: Path, where: Where, what: str, root: Path | None) -> Path:
    """A flow folder (flow.dag.yaml / flow.flex.yaml inside) or a flow file, relative to ``base_dir``."""
    target = _resolve(base_dir, raw)
    if (target.is_dir() and any((target / name).is_file() for name in FLOW_FILES)) or (
            target.is_file() and target.suffix.lower() in (".prompty", ".yaml", ".yml")):
        check_inside(target, root, where, what)
        return target
    problem = (f"{what} {raw!r}: {target} has neither flow.dag.yaml nor flow.flex.yaml" if target.is_dir()
               else f"{what} {raw!r} not found: {target}")
    raise SpecError(where, problem, f"point it (relative to {base_dir}) at a folder with flow.dag.yaml "
                                    "or flow.flex.yaml, or at a .prompty file")


def _source(path: Path, node: Any, base_dir: Path, what: str, root: Path | None) -> Path:
    from .datasets import SUPPORTED_SUFFIXES

    raw = _text(path, node, "source", what) or ""
    where = _at(path, node, "source")
    if raw.startswith("azureml:"):
        raise SpecError(where, f"{what}: remote source {raw!r} cannot be read locally",
                        "download the data asset and point source at the .jsonl or .csv file")
    target = _resolve(base_dir, raw)
    if not target.exists() and (base_dir / "data" / raw).is_file():
        target = _resolve(base_dir / "data", raw)  # the template's own fallback
    if not target.is_file():
        raise SpecError(where, f"{what}: source file not found: {target}",
                        f"check the path; it is relative to {base_dir}")
    if target.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise SpecError(where, f"{what}: unsupported data file {target.name}",
                        f"use one of: {', '.join(SUPPORTED_SUFFIXES)}")
    check_inside(target, root, where, f"{what}: source")
    return target


def _mappings(path: Path, item: Any, what: str, *, for_evaluator: bool) -> dict[str, Any]:
    """Validated mappings, ``${target.x}`` rewritten as ``${run.outputs.x}``."""
    if "mappings" not in item:
        return {}
    node = _mapping_node(path, item, "mappings", what)
    mappings: dict[str, Any] = {}
    for key, value in node.items():
        where = _at(path, node, key)
        if value is None or isinstance(value, (dict, list)):
            raise SpecError(where, f"{what}: mapping {key!r} must be a reference or a literal, got {_kind(value)}",
                            _MAPPING_FIX)
        try:
            source = parse_mapping(value, where)
        except SpecError as exc:
            raise SpecError(where, f"{what}: mapping {key!r}: {exc.problem}", exc.fix) from None
        if source and source[0] == "run":
            if not for_evaluator:
                raise SpecError(where, f"{what}: mapping {key!r} reads a flow output, but this dataset feeds "
                                "the flow itself", "use ${data.<column>} here; flow outputs belong in evaluators")
            value = f"${{run.outputs.{source[1]}}}"
        elif source:
            value = f"${{data.{source[1]}}}"
        mappings[str(key)] = _plain(value)
    return mappings


def _dataset_where(path: Path, items: list[Any], index: int) -> Where:
    item = items[index]
    return _at(path, item, "mappings") if "mappings" in item else _at(path, items, index)


# --- sections -----------------------------------------------------------------------------------


def _connections(src: _Src) -> tuple[ConnectionSpec, ...]:
    items = _list_node(src.path, src.node, src.key, "experiment", "name: aoai", empty_ok=True)
    specs: dict[str, ConnectionSpec] = {}
    for index, _ in enumerate(items):
        item = _item(src.path, items, index, f"connection #{index + 1}", ("name", "connection_type"))
        _require(src.path, item, ("name", "connection_type"), f"connection #{index + 1}")  # others: properties
        name = _text(src.path, item, "name", "connection") or ""
        what = f"connection {name!r}"
        kind = _text(src.path, item, "connection_type", what) or ""
        if kind not in CONNECTION_TYPES:
            raise SpecError(_at(src.path, item, "connection_type"), f"{what}: unknown connection_type {kind!r}",
                            f"{_did_you_mean(kind, CONNECTION_TYPES)}promptflow's types: {', '.join(CONNECTION_TYPES)}")
        if name in specs:
            raise SpecError(_at(src.path, item, "name"), f"two connections are named {name!r}", "rename one")
        values: dict[str, str] = {}
        nested: dict[str, dict[str, str]] = {"configs": {}, "secrets": {}}
        for key, value in item.items():
            where = _at(src.path, item, key)
            if key in ("name", "connection_type"):
                continue
            if key in nested and isinstance(value, dict):
                for inner, inner_value in value.items():
                    if isinstance(inner_value, (dict, list)):
                        raise SpecError(_at(src.path, value, inner), f"{what}: {key}.{inner} must be one value",
                                        "write 'name: value' (${VAR} reads an environment variable)")
                    nested[key][str(inner)] = _expand(inner_value)
                continue
            if isinstance(value, (dict, list)):
                raise SpecError(where, f"{what}: {key!r} must be one value, got {_kind(value)}",
                                "write 'key: value'; only configs and secrets take a mapping")
            key = CONNECTION_ALIASES.get(str(key), str(key))
            if key in values:
                raise SpecError(where, f"{what}: api_base is given twice (api_base and api_endpoint)",
                                "keep one of them")
            values[key] = _expand(value)
        specs[name] = ConnectionSpec(name, kind, values, _at(src.path, items, index),
                                     configs=nested["configs"], secrets=nested["secrets"])
    return tuple(specs.values())


def _init(path: Path, node: Any, key: str, what: str) -> dict[str, Any]:
    """A class or flex flow's init arguments: a mapping of plain values (a connection by its name)."""
    return {str(k): _plain(v) for k, v in _mapping_node(path, node, key, what).items()}


def _expand(value: Any) -> str:
    """A connection value with each ``${VAR}`` read from the environment (unset: empty)."""
    if value is None:
        return ""
    return _ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), ""), str(value))


def _datasets(src: _Src, base_dir: Path, root: Path | None) -> tuple[DatasetSpec, ...]:
    items = _list_node(src.path, src.node, src.key, "experiment", "name: ..., source: data/....jsonl",
                       empty_ok=False)
    specs: dict[str, DatasetSpec] = {}
    for index, _ in enumerate(items):
        item = _item(src.path, items, index, f"dataset #{index + 1}", DATASET_KEYS)
        _check_keys(src.path, item, DATASET_KEYS, ("name", "source"), f"dataset #{index + 1}")
        name = _text(src.path, item, "name", "dataset") or ""
        what = f"dataset {name!r}"
        if name in specs:
            raise SpecError(_at(src.path, item, "name"), f"two datasets are named {name!r}", "rename one")
        specs[name] = DatasetSpec(
            name=name,
            source=_source(src.path, item, base_dir, what, root),
            mappings=_mappings(src.path, item, what, for_evaluator=False),
            description=_text(src.path, item, "description", what) or "",
            where=_dataset_where(src.path, items, index),
        )
    return tuple(specs.values())


def _evaluators(src: _Src, base_dir: Path, standard: Mapping[str, DatasetSpec],
                root: Path | None) -> tuple[EvaluatorSpec, ...]:
    items = _list_node(src.path, src.node, src.key, "experiment", "name: ..., flow: ..., datasets: [...]",
                       empty_ok=True)
    specs: dict[str, EvaluatorSpec] = {}
    for index, _ in enumerate(items):
        item = _item(src.path, items, index, f"evaluator #{index + 1}", EVALUATOR_KEYS)
        _check_keys(src.path, item, EVALUATOR_KEYS, ("name", "datasets"), f"evaluator #{index + 1}")
        name = _text(src.path, item, "name", "evaluator") or ""
        what = f"evaluator {name!r}"
        if name in specs:
            raise SpecError(_at(src.path, item, "name"), f"two evaluators are named {name!r}", "rename one")
        flow_key = "flow" if "flow" in item else "name"  # the template defaults the flow to the name
        raw_flow = _text(src.path, item, flow_key, what) or ""
        refused = no_flow_file(raw_flow, base_dir, name)
        flow = (_resolve(base_dir, raw_flow) if refused
                else _flow_path(raw_flow, base_dir, _at(src.path, item, flow_key), f"{what} flow", root))
        entries = _list_node(src.path, item, "datasets", what, "name: <standard dataset>", empty_ok=False)
        datasets: dict[str, DatasetSpec] = {}
        for number, _ in enumerate(entries):
            spec = _evaluator_dataset(src.path, entries, number, base_dir, standard, what, root)
            if spec.name in datasets:
                raise SpecError(_at(src.path, entries, number), f"{what} lists dataset {spec.name!r} twice",
                                "remove one")
            datasets[spec.name] = spec
        init = _init(src.path, item, "init", what) if "init" in item else {}
        specs[name] = EvaluatorSpec(name, flow, tuple(datasets.values()), _at(src.path, items, index), init,
                                    refused=refused)
    return tuple(specs.values())


def no_flow_file(raw: str, base_dir: Path, name: str) -> str:
    """Why an evaluator folder with no flow file cannot run (problem; fix), or "" when it is not such a folder.

    The GenAIOps template's use cases ship evaluator folders of ``eval_*.py`` scripts with no flow file
    (``eval_use_case(run_name, data_id, column_mapping)`` stubs that print); its evaluation step hands
    the folder to ``pf`` as a flow, so they run nowhere. Such an evaluator is refused alone: the rest of
    the experiment runs.
    """
    folder = _resolve(base_dir, raw)
    if not folder.is_dir() or any((folder / file).is_file() for file in FLOW_FILES):
        return ""
    scripts = sorted(path.name for path in folder.glob("*.py"))
    holds = f" (it holds {', '.join(scripts[:3])}{', ...' if len(scripts) > 3 else ''})" if scripts else ""
    entry = f"{Path(scripts[0]).stem}:<function or class>" if scripts else "<module>:<function or class>"
    return (f"evaluator {name}: folder {raw} has no flow file{holds}, so it is not run; add {raw}/flow.flex.yaml "
            f"with 'entry: {entry}' taking the mapped columns and returning a dict of scores, or point flow at "
            "an evaluation flow folder")


def _evaluator_dataset(path: Path, entries: list[Any], index: int, base_dir: Path,
                       standard: Mapping[str, DatasetSpec], evaluator: str, root: Path | None) -> DatasetSpec:
    """Either a standard dataset by name, or its own ``source`` whose rows match ``reference``'s."""
    item = _item(path, entries, index, f"{evaluator} dataset #{index + 1}", EVALUATOR_DATASET_KEYS)
    _check_keys(path, item, EVALUATOR_DATASET_KEYS, ("name",), f"{evaluator} dataset #{index + 1}")
    name = _text(path, item, "name", f"{evaluator} dataset") or ""
    what = f"{evaluator} dataset {name!r}"
    reference = _text(path, item, "reference", what)
    known = ", ".join(standard)
    if name in standard and "source" not in item:
        if reference not in (None, name):
            raise SpecError(_at(path, item, "reference"), f"{what} is a standard dataset, so it cannot reference "
                            f"{reference!r}", "remove reference, or give this dataset its own name and a source")
        source, reference = standard[name].source, name
        description = _text(path, item, "description", what) or standard[name].description
    else:
        if "source" not in item:
            raise SpecError(_at(path, entries, index), f"{what} is neither a standard dataset nor has a source",
                            f"{_did_you_mean(name, standard)}name a standard dataset ({known}), "
                            "or add source: and reference:")
        if name in standard:
            raise SpecError(_at(path, item, "source"), f"{what} has a standard dataset's name and its own source",
                            f"remove source to use the standard dataset {name!r}, or rename this dataset")
        if reference is None:
            raise SpecError(_at(path, entries, index), f"{what} has a source but no reference",
                            f"add 'reference: <the standard dataset the flow ran on>', one of: {known}")
        if reference not in standard:
            raise SpecError(_at(path, item, "reference"), f"{what}: reference {reference!r} is not a standard dataset",
                            f"{_did_you_mean(reference, standard)}standard datasets: {known}")
        source = _source(path, item, base_dir, what, root)
        description = _text(path, item, "description", what) or ""
    return DatasetSpec(name, source, _mappings(path, item, what, for_evaluator=True), description, reference,
                       _dataset_where(path, entries, index))


def _variants(src: _Src, workflow: bool = False) -> VariantsSpec:
    """Our ``variants:`` key; a workflow's overrides are its factory's keyword arguments (``temperature``)."""
    if src.value is None:
        return VariantsSpec(where=src.where)
    node = _mapping_node(src.path, src.node, src.key, "experiment")
    _check_keys(src.path, node, VARIANTS_KEYS, (), "variants")
    strategy = _text(src.path, node, "strategy", "variants") or "matrix"
    if strategy not in STRATEGIES:
        raise SpecError(_at(src.path, node, "strategy"), f"unknown strategy {strategy!r}",
                        f"{_did_you_mean(strategy, STRATEGIES)}use one of: {', '.join(STRATEGIES)}")
    nodes: dict[str, tuple[str, ...] | str] = {}
    for key, value in (_mapping_node(src.path, node, "nodes", "variants") if "nodes" in node else {}).items():
        ids = [value] if isinstance(value, str) else value
        if not isinstance(ids, list) or not ids or not all(isinstance(v, str) and v.strip() for v in ids):
            raise SpecError(_at(src.path, node["nodes"], key), f"variants of node {key!r}: got {_kind(value)}",
                            'write "*" for all variants or a list of variant ids, e.g. [variant_0, variant_1]')
        nodes[str(key)] = "*" if "*" in ids else tuple(dict.fromkeys(str(v).strip() for v in ids))
    overrides: dict[str, tuple[Any, ...]] = {}
    for key, value in (_mapping_node(src.path, node, "overrides", "variants") if "overrides" in node else {}).items():
        where = _at(src.path, node["overrides"], key)
        if workflow and not str(key).isidentifier():
            raise SpecError(where, f"override {key!r} is not a factory argument name",
                            "a workflow's overrides are its factory's keyword arguments, e.g. temperature")
        if not workflow and not _OVERRIDE_KEY.match(str(key)):
            raise SpecError(where, f"override {key!r} does not name a node setting",
                            "write nodes.<node>.inputs.<input>, e.g. nodes.classify.inputs.temperature")
        if value is None or value == []:
            raise SpecError(where, f"override {key!r} has no values", "give a value or a list of values")
        overrides[str(key)] = tuple(_plain(value)) if isinstance(value, list) else (_plain(value),)
    return VariantsSpec(strategy, nodes, overrides, src.where)


def _baseline(src: _Src) -> BaselineSpec:
    """``baseline: cell:<configuration> | released | <path>/rows.csv[#<configuration>]``, paths relative to the file."""
    from .baseline import parse_baseline

    return parse_baseline(src.value, src.path.parent, src.where)


def _twin(sections: Mapping[str, _Src]) -> TwinSpec | None:
    """``twin: <flow spec>`` (run beside the flow) or ``twin_of: <report>[#<flow>[:<configuration>]]``, paths
    relative to the file."""
    from .twin import parse_twin

    given = [sections[key] for key in ("twin", "twin_of") if key in sections]
    if not given:
        return None
    where = given[-1].where
    return parse_twin(sections["twin"].value if "twin" in sections else None,
                      sections["twin_of"].value if "twin_of" in sections else None, given[-1].path.parent, where)


def _repeat(src: _Src) -> int:
    """``repeat: 3``: each row runs three times."""
    try:
        return parse_repeat(src.value)
    except ValueError as error:
        raise SpecError(src.where, f"experiment: {error}", REPEAT_FIX) from None


def _thresholds(src: _Src) -> tuple[Threshold, ...]:
    if src.value is None:
        return ()
    node = _mapping_node(src.path, src.node, src.key, "experiment")
    thresholds: list[Threshold] = []
    for metric, text in node.items():
        where = _at(src.path, node, metric)
        for one in (text if isinstance(text, list) and text else [text]):
            thresholds.append(parse_threshold(str(metric), _plain(one), where))
    return tuple(thresholds)
