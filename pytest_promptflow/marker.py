"""``@pytest.mark.promptflow(...)`` arguments -> an ExperimentSpec, checked like experiment.yaml."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping

import pytest

from .baseline import parse_baseline
from .config import REPEAT_FIX, STRATEGIES, DatasetSpec, ExperimentSpec, VariantsSpec, parse_repeat
from .errors import SpecError, Where
from .flows import check_flow
from .project_root import check_inside
from .twin import parse_twin
from .workflows.spec import is_workflow
from .workflows.spec import parse as parse_workflow

ARGUMENTS = ("flow", "data", "variants", "overrides", "strategy", "mappings", "init", "name", "baseline", "repeat",
             "twin", "twin_of")


def spec_from_marker(
    marker: pytest.Mark, where: Where, rootdir: Path, confine_to: Path | None = None
) -> tuple[ExperimentSpec, Mapping[str, Any] | None]:
    """The experiment a marker declares, and the init arguments of a class or flex flow; its flow and data
    paths are relative to ``rootdir`` and, given ``confine_to``, must be inside it."""
    kwargs = dict(marker.kwargs)
    if marker.args:
        kwargs.setdefault("flow", marker.args[0])
    for key in kwargs:
        if key not in ARGUMENTS:
            close = difflib.get_close_matches(key, ARGUMENTS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SpecError(where, f"promptflow marker has no argument {key!r}",
                            f"{hint}arguments: {', '.join(ARGUMENTS)}")
    if "flow" not in kwargs or "data" not in kwargs:
        raise SpecError(where, "promptflow marker needs flow= and data=",
                        'e.g. @pytest.mark.promptflow(flow="flows/sentiment", data="evals/data/sentiment.jsonl")')
    check_flow(kwargs["flow"], where)
    _check_flow_inside(kwargs["flow"], rootdir, confine_to, where)
    strategy = kwargs.get("strategy", "matrix")
    if strategy not in STRATEGIES:
        raise SpecError(where, f"unknown strategy {strategy!r}", f"use one of {', '.join(STRATEGIES)}")
    mappings = _mapping_argument(kwargs, "mappings", where, '{"text": "${data.question}"}')
    datasets = tuple(_datasets(kwargs["data"], mappings, where, rootdir, confine_to))
    overrides = _mapping_argument(kwargs, "overrides", where, '{"nodes.classify.inputs.temperature": [0.0, 0.7]}')
    variants = VariantsSpec(strategy=strategy, nodes=_mapping_argument(kwargs, "variants", where, '{"classify": "*"}'),
                            overrides={key: tuple(v) if isinstance(v, (list, tuple)) else (v,)
                                       for key, v in overrides.items()}, where=where)
    init = kwargs.get("init")
    if init is not None and not isinstance(init, Mapping):
        raise SpecError(where, f"init= must be a mapping of argument names to values, got {type(init).__name__}",
                        'e.g. init={"model_config": {"connection": "aoai", "azure_deployment": "gpt-35-turbo"}}')
    flow = kwargs["flow"]
    name = str(kwargs.get("name") or _flow_name(flow, rootdir, where))
    baseline = parse_baseline(kwargs["baseline"], rootdir, where) if kwargs.get("baseline") is not None else None
    twin = parse_twin(kwargs.get("twin"), kwargs.get("twin_of"), rootdir, where)
    return ExperimentSpec(name=name, flow=flow, datasets=datasets, variants=variants, where=where,
                          baseline=baseline, repeat=_repeat(kwargs.get("repeat"), where), twin=twin), init


def _mapping_argument(kwargs: Mapping[str, Any], key: str, where: Where, example: str) -> dict[str, Any]:
    """A marker argument that must be a mapping (absent or None: empty)."""
    value = kwargs.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(where, f"promptflow marker: {key}={value!r} is not a mapping", f"write e.g. {key}={example}")
    return dict(value)


def _repeat(value: Any, where: Where) -> int | None:
    """``repeat=3``: each row runs three times; None leaves it to --promptflow-repeat."""
    if value is None:
        return None
    try:
        return parse_repeat(value)
    except ValueError as error:
        raise SpecError(where, f"promptflow marker: {error}", REPEAT_FIX) from None


def _flow_name(flow: Any, rootdir: Path, where: Where) -> str:
    """The experiment's name when the marker gives none: the flow folder's (a workflow's module's folder's)."""
    if is_workflow(flow):
        return parse_workflow(flow, rootdir, where).name
    return Path(flow).name if isinstance(flow, (str, Path)) else getattr(flow, "__name__", "flow")


def _check_flow_inside(flow: Any, rootdir: Path, confine_to: Path | None, where: Where) -> None:
    """A flow given as a path that exists must be inside ``confine_to`` (one that does not: load_target says so)."""
    if is_workflow(flow):
        check_inside(parse_workflow(flow, rootdir, where).path, confine_to, where, "flow")
    elif isinstance(flow, (str, Path)):
        path = Path(flow) if Path(flow).is_absolute() else rootdir / flow
        if path.exists():
            check_inside(path, confine_to, where, "flow")


def _named_paths(data: Any) -> list[tuple[Any, Any]]:
    """(name, path) pairs of ``data=``: a path, a list of paths (each named by its stem) or a mapping."""
    if isinstance(data, (str, Path)):
        data = [data]
    if isinstance(data, Mapping):
        return list(data.items())
    if isinstance(data, (list, tuple)):
        return [(Path(path).stem if isinstance(path, (str, Path)) else path, path) for path in data]
    return []


def _datasets(data: Any, mappings: Mapping[str, str], where: Where, rootdir: Path,
              confine_to: Path | None) -> list[DatasetSpec]:
    if isinstance(data, DatasetSpec):
        check_inside(Path(data.source), confine_to, data.where or where, f"dataset {data.name!r}: source")
        return [data]
    named = _named_paths(data)
    if not named or not all(isinstance(path, (str, Path)) and str(path).strip() for _, path in named):
        raise SpecError(where, f"promptflow marker: data={data!r} is not a dataset path",
                        'give a JSONL or CSV path relative to the project root, a list of them or a mapping of names '
                        'to them, e.g. data="evals/data/sentiment.jsonl"')
    datasets = []
    for name, path in named:
        source = Path(path) if Path(path).is_absolute() else rootdir / path
        if not source.is_file():
            raise SpecError(where, f"dataset {str(path)!r} not found (looked for {source})",
                            "give a JSONL or CSV path relative to the project root")
        check_inside(source, confine_to, where, f"dataset {str(name)!r}: source")
        datasets.append(DatasetSpec(name=str(name), source=source, mappings=mappings, where=where))
    return datasets
