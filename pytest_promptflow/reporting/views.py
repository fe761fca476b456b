"""Typed, read-only views of report.json's entries, for the hooks a conftest implements (``hookspecs.py``):
attributes to read, and ``entry["key"]`` still works for hooks written when they were plain dicts."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping


@dataclass(frozen=True)
class CellView:
    """One tested configuration of a flow on one dataset."""

    cell: str  # the cell's id, e.g. "clf-classify=variant_1-small"
    config: str  # its configuration label, e.g. "classify=variant_1"
    dataset: str
    variants: Mapping[str, str]
    overrides: Mapping[str, Any]
    metrics: Mapping[str, float]
    verdicts: tuple[Mapping[str, Any], ...]
    outcome: str  # passed, skipped, failed or error
    entry: Mapping[str, Any]  # the whole entry of report.json (rows, items, intervals, ...)

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> CellView:
        return cls(entry["cell"], entry["config"], entry["dataset"], MappingProxyType(dict(entry["variants"])),
                   MappingProxyType(dict(entry["overrides"])), MappingProxyType(dict(entry["metrics"])),
                   tuple(entry["verdicts"]), entry["outcome"], MappingProxyType(dict(entry)))

    def __getitem__(self, key: str) -> Any:
        return self.entry[key]


@dataclass(frozen=True)
class FlowView:
    """A flow of the report with every cell it ran and the best of them."""

    flow: str
    primary_metric: str | None
    best: str | None  # the best configuration's label, None when none passed
    best_reason: str
    cells: tuple[CellView, ...]
    entry: Mapping[str, Any]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> FlowView:
        return cls(entry["flow"], entry["primary_metric"], entry["best"], entry["best_reason"],
                   tuple(CellView.of(cell) for cell in entry["cells"]),
                   MappingProxyType({**entry, "cells": [CellView.of(cell) for cell in entry["cells"]]}))

    def __getitem__(self, key: str) -> Any:
        return self.entry[key]


@dataclass(frozen=True)
class ReleaseRecord:
    """What the release decided for one flow; ``fields`` is the record as written (``release-<flow>.json``)."""

    flow: str
    decision: str  # released, not released, pending approval or rejected
    configuration: str | None
    reason: str
    fields: Mapping[str, Any]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> ReleaseRecord:
        return cls(record["flow"], record["decision"], record.get("configuration"), record.get("reason", ""),
                   MappingProxyType(dict(record)))

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]
