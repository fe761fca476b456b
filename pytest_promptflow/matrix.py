"""Specs to cells: the points of the flow x variants x overrides x dataset matrix, with readable ids."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .config import DatasetSpec, VariantsSpec
from .errors import SpecError, Where


@dataclass(frozen=True)
class Cell:
    """One point of the matrix: which flow, which variant per node, which overrides, which data."""

    flow: str
    variants: tuple[tuple[str, str], ...]
    overrides: tuple[tuple[str, Any], ...]
    dataset: DatasetSpec
    init: tuple[tuple[str, str], ...] = ()  # init argument -> its label (see init_labels)

    @property
    def id(self) -> str:
        return "-".join([safe_id_part(self.flow), *self._config_parts(), safe_id_part(self.dataset.name)])

    @property
    def config(self) -> str:
        """The configuration without flow and dataset, as report.json's ``config``: ``classify=variant_1``, or
        ``defaults`` for a flow with no variants, overrides or init labels."""
        return "-".join(self._config_parts()) or "defaults"

    def _config_parts(self) -> list[str]:
        short = _short_override_names([key for key, _ in self.overrides])
        parts = [f"{safe_id_part(node)}={safe_id_part(variant)}" for node, variant in self.variants]
        parts += [f"{safe_id_part(short[key])}={safe_id_part(str(value))}" for key, value in self.overrides]
        parts += [f"{safe_id_part(key)}={safe_id_part(label)}" for key, label in self.init]
        return parts

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two cells the same run (the dataset by file and mappings, not by name)."""
        mappings = tuple(sorted(self.dataset.mappings.items()))
        overrides = tuple((k, repr(v)) for k, v in self.overrides)
        return (self.flow, self.variants, overrides, str(self.dataset.source), mappings, self.init)


#: what an id keeps verbatim; pytest-html inserts test ids as HTML, so nothing that could be markup
_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.=+~-]")


def safe_id_part(text: str) -> str:
    """``text`` for a test id: characters outside a conservative set become ``_`` (an id cannot carry markup
    into a report), plus a short hash of the original when any did, so two values that read alike stay two ids."""
    safe = _UNSAFE_ID_CHARACTERS.sub("_", text)
    if safe == text:
        return text
    return f"{safe}_{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:6]}"


#: init arguments named like these are left out of labels: a label is shown everywhere
_SECRET_WORDS = ("key", "secret", "password", "token", "credential")
_LABEL_LENGTH = 24


def init_labels(init: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """Short labels of init arguments for ids and reports: ``word=good``; a model configuration or a
    connection by its connection name (else its deployment or model), never a secret; other
    structured values by a short hash of their JSON."""
    labels = []
    for key, value in (init or {}).items():
        if any(word in key.casefold() for word in _SECRET_WORDS):
            continue
        labels.append((key, _label(value)))
    return tuple(labels)


def _label(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = str(value)
        return text if len(text) <= _LABEL_LENGTH else text[:_LABEL_LENGTH - 1] + "~"
    fields = value if isinstance(value, Mapping) else getattr(value, "__dict__", None)
    if isinstance(fields, Mapping):
        for name in ("connection", "azure_deployment", "model"):
            if isinstance(fields.get(name), str) and fields[name]:
                return _label(fields[name])
    text = json.dumps(value, sort_keys=True, default=_stable)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _stable(value: Any) -> Any:
    """What of a non-JSON value goes into its label's hash: the same in every process (xdist workers
    must agree on ids), so its fields or its type's name, never a repr with an address."""
    fields = getattr(value, "__dict__", None)
    return fields if isinstance(fields, dict) and fields else getattr(value, "__qualname__", type(value).__qualname__)


def _short_override_names(keys: Sequence[str]) -> dict[str, str]:
    """``nodes.classify.inputs.temperature`` -> ``temperature``, longer only where two would clash."""
    short: dict[str, str] = {}
    for key in keys:
        parts = [p for p in key.split(".") if p not in ("nodes", "inputs")]
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            clashes = [k for k in keys if k != key and ".".join(
                [p for p in k.split(".") if p not in ("nodes", "inputs")][-n:]) == name]
            if not clashes:
                break
        short[key] = name
    return short


def expand(
    flow: str,
    variants: VariantsSpec,
    node_variants: Mapping[str, tuple[str, tuple[str, ...]]],
    datasets: Sequence[DatasetSpec],
    init: Mapping[str, Any] | None = None,
) -> list[Cell]:
    """Cells for one flow; ``node_variants`` maps node -> (default variant, all variant ids); ``init``
    (the init arguments given, not a flow's init.json) is named in the cells' ids."""
    nodes = _chosen_variants(variants, node_variants)
    overrides = {key: tuple(values) for key, values in variants.overrides.items()}
    combos: list[tuple[tuple[tuple[str, str], ...], tuple[tuple[str, Any], ...]]] = []
    defaults = tuple((node, node_variants[node][0]) for node in nodes)
    if variants.strategy == "defaults":
        combos.append((defaults, ()))
    elif variants.strategy == "one_at_a_time":
        combos.append((defaults, ()))
        for i, (node, ids) in enumerate(nodes.items()):
            for variant in ids:
                if variant != node_variants[node][0]:
                    swapped = defaults[:i] + ((node, variant),) + defaults[i + 1:]
                    combos.append((swapped, ()))
        for key, values in overrides.items():
            combos.extend((defaults, ((key, value),)) for value in values)
    else:
        variant_axes = [[(node, v) for v in ids] for node, ids in nodes.items()]
        override_axes = [[(key, v) for v in values] for key, values in overrides.items()]
        for choice in itertools.product(*variant_axes):
            for values in itertools.product(*override_axes):
                combos.append((tuple(choice), tuple(values)))
    labels = init_labels(init)
    return [Cell(flow, v, o, ds, labels) for ds in datasets for v, o in combos]


def _chosen_variants(
    variants: VariantsSpec, node_variants: Mapping[str, tuple[str, tuple[str, ...]]]
) -> dict[str, tuple[str, ...]]:
    chosen: dict[str, tuple[str, ...]] = {}
    for node, wanted in variants.nodes.items():
        if node not in node_variants:
            known = ", ".join(sorted(node_variants)) or "none"
            raise SpecError(
                variants.where,
                f"node {node!r} has no variants in the flow (nodes with variants: {known})",
                "name a node listed under node_variants in flow.dag.yaml",
            )
        all_ids = node_variants[node][1]
        ids = all_ids if wanted == "*" else tuple(wanted if isinstance(wanted, (list, tuple)) else [wanted])
        for variant in ids:
            if variant not in all_ids:
                raise SpecError(
                    variants.where,
                    f"node {node!r} has no variant {variant!r} (it has {', '.join(all_ids)})",
                    "use one of those ids or '*'",
                )
        chosen[node] = tuple(ids)
    return chosen


def narrow(cells: list[Cell], selection: str | None) -> list[Cell]:
    """Keep the cells that match ``node=variant[,node=variant...]`` from --promptflow-variants."""
    if not selection:
        return cells
    wanted = dict(part.split("=", 1) for part in selection.split(",") if part.strip())
    return [
        cell
        for cell in cells
        if all(dict(cell.variants).get(node, variant) == variant for node, variant in wanted.items())
    ]


def parse_selection(text: str) -> str:
    """argparse ``type=`` for --promptflow-variants: ``node=variant[,node=variant]``."""
    import argparse

    for part in text.split(","):
        node, sep, variant = part.partition("=")
        if not sep or not node.strip() or not variant.strip():
            raise argparse.ArgumentTypeError(
                f"{part!r} is not node=variant (e.g. --promptflow-variants classify=variant_1)"
            )
    return text


def default_variants(node_variants: Mapping[str, tuple[str, tuple[str, ...]]], where: Where | None) -> VariantsSpec:
    """The GenAIOps template's matrix for a file without our keys: every node, one at a time."""
    return VariantsSpec(strategy="one_at_a_time", nodes={n: "*" for n in node_variants}, where=where)
