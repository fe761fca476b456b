"""Validated specs of an experiment, whichever front end declared it (experiment.yaml or marker)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import SpecError, Where
from .thresholds import Threshold

STRATEGIES = ("matrix", "one_at_a_time", "defaults")


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset file with the mappings from its columns to flow or evaluator inputs."""

    name: str
    source: Path
    mappings: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    reference: str | None = None  # evaluator datasets: the standard dataset the flow ran on
    where: Where | None = None


@dataclass(frozen=True)
class EvaluatorSpec:
    """An evaluator (evaluation flow folder, or any callable) and the datasets it scores."""

    name: str
    flow: Path | Callable[..., Any]
    datasets: tuple[DatasetSpec, ...] = ()
    where: Where | None = None
    init: Mapping[str, Any] = field(default_factory=dict)  # a class evaluator's (or flex evaluation flow's)
    refused: str = ""  # the one-line reason it cannot run (a folder with no flow file); the rest runs


@dataclass(frozen=True)
class ConnectionSpec:
    """A connection declared in experiment.yaml; ``${VAR}`` values already read from the environment."""

    name: str
    type: str
    values: Mapping[str, str] = field(default_factory=dict, repr=False)  # secrets: kept out of repr
    where: Where | None = None
    configs: Mapping[str, str] = field(default_factory=dict, repr=False)  # CustomConnection configs
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # CustomConnection secrets


@dataclass(frozen=True)
class VariantsSpec:
    """Which node variants and override values make the matrix, and how they combine."""

    strategy: str = "matrix"
    nodes: Mapping[str, tuple[str, ...] | str] = field(default_factory=dict)  # "*" = all variants
    overrides: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    where: Where | None = None


@dataclass(frozen=True)
class BaselineSpec:
    """What baseline thresholds compare with: ``cell:<configuration>`` (another cell on the same dataset),
    ``released`` (the flow's released version), or a previous ``rows.csv`` (``path#<configuration>``)."""

    text: str  # as declared, for the reports
    kind: str  # "cell", "released" or "rows"
    config: str = ""  # the configuration (cell:, or the part after # of a rows.csv path)
    path: Path | None = None  # a rows.csv, resolved
    where: Where | None = None


@dataclass(frozen=True)
class TwinSpec:
    """A migrated twin to check parity with: ``twin=`` names a flow that runs on the cell's rows beside it;
    ``twin_of=`` names a stored report whose rows are the original and makes the cell's own flow the twin."""

    text: str  # as declared, for the reports
    flow: Any = None  # twin=: any flow spec (a path, ``maf:...``, a callable), relative to ``base_dir``
    base_dir: Path = Path()
    report: Path | None = None  # twin_of=: a report.json, resolved
    original: str = ""  # twin_of=: the stored flow (``#<flow>``), else the report's only flow on the dataset
    config: str = ""  # twin_of=: its configuration (``#<flow>:<configuration>``), else that flow's best
    where: Where | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything one experiment asks for: the flow, its data, evaluators, matrix and thresholds."""

    name: str
    flow: Path | str | Callable[..., Any]  # str: a workflow, ``maf:<module path>:<factory>``
    datasets: tuple[DatasetSpec, ...]
    evaluators: tuple[EvaluatorSpec, ...] = ()
    connections: tuple[ConnectionSpec, ...] = ()
    variants: VariantsSpec | None = None  # None: template file without our keys
    thresholds: tuple[Threshold, ...] = ()
    where: Where | None = None
    init: Mapping[str, Any] = field(default_factory=dict)  # a class or flex flow's init arguments
    baseline: BaselineSpec | None = None  # what ``>= baseline ...`` thresholds compare with
    repeat: int | None = None  # runs of each row; None: the session's (--promptflow-repeat, ini promptflow_repeat)
    twin: TwinSpec | None = None  # what the cell's parity is checked with (twin.py)


REPEAT_FIX = "give a whole number of runs per row, 1 or more"


def parse_repeat(value: Any) -> int:
    """How many times each row runs: a whole number of 1 or more (``"3"`` too), else ValueError saying so."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("+").isdigit() or int(text) < 1:
        raise ValueError(f"repeat {value!r} is not a whole number of 1 or more")
    return int(text)


#: ``${data.col}``, ``${run.outputs.x}`` or ``${target.x}`` (the same as ``${run.outputs.x}``).
MAPPING_PATTERN = re.compile(r"^\$\{(data|run\.outputs|target)\.([^{}]+)\}$")
_MAPPING_FIX = 'write "${data.<column>}", "${run.outputs.<output>}" (or "${target.<output>}"), or a literal'


def data_columns(mappings: Mapping[str, Any]) -> list[str]:
    """The dataset columns that ``${data.col}`` mappings read."""
    sources = (parse_mapping(value) for value in mappings.values())
    return [source[1] for source in sources if source and source[0] == "data"]


def parse_mapping(value: Any, where: Where | None = None) -> tuple[str, str] | None:
    """``${data.col}`` -> ("data", col); ``${run.outputs.x}`` or ``${target.x}`` -> ("run", x); a literal -> None.

    Any other ``${...}`` is a typo, not a literal: it raises SpecError (at ``where`` if given).
    """
    if not isinstance(value, str):
        return None
    match = MAPPING_PATTERN.match(value.strip())
    if match:
        return ("data" if match.group(1) == "data" else "run", match.group(2).strip())
    if "${" in value:
        raise SpecError(where, f"{value!r} is not a mapping we know", _MAPPING_FIX)
    return None
