"""What each node variant of a DAG flow is: the text of the file its source names (the prompt template)
and its literal parameters, so that a report can say "the few-shot prompt wins", not only "variant_1 wins".
Pure reading of the flow folder: no promptflow import."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Mapping

MAX_TEMPLATE_CHARS = 20_000  # a report carries a template up to this size, then says where the rest is


def describe_variants(kind: str, folder: Path | None, definition: Mapping[str, Any]) -> dict[str, Any]:
    """node -> variant -> ``{"source", "template", "parameters", "default"}`` for a DAG flow's ``node_variants``
    (empty for any other flow). ``template`` is None when the source names no readable text file (a package tool)."""
    if kind != "dag" or folder is None:
        return {}
    described: dict[str, Any] = {}
    for node, config in (definition.get("node_variants") or {}).items():
        variants = (config or {}).get("variants") or {}
        default = (config or {}).get("default_variant_id") or next(iter(variants), "")
        described[str(node)] = {str(variant): _variant(folder, (spec or {}).get("node") or {}, variant == default)
                                for variant, spec in variants.items()}
    return described


def _variant(folder: Path, node: Mapping[str, Any], default: bool) -> dict[str, Any]:
    source = node.get("source") or {}
    path = source.get("path") if source.get("type") == "code" else None
    return {"source": str(path or source.get("tool") or ""), "template": _text(folder, path),
            "parameters": literal_inputs(node.get("inputs") or {}), "default": default}


def literal_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A node's inputs that are values (temperature, max_tokens, ...), not ``${...}`` references."""
    return {str(key): value for key, value in inputs.items()
            if not (isinstance(value, str) and value.strip().startswith("${"))}


def _text(folder: Path, path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    try:
        text = (folder / path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if len(text) <= MAX_TEMPLATE_CHARS:
        return text
    return f"{text[:MAX_TEMPLATE_CHARS]}\n[cut: {len(text):,} characters in all; the whole file is {path}]"


def parameter_changes(default: Mapping[str, Any], other: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, default's value, other's value) of every parameter that differs; a missing one is None."""
    names = list(dict.fromkeys([*default, *other]))
    return [(name, default.get(name), other.get(name)) for name in names if default.get(name) != other.get(name)]


def template_diff(default: str | None, other: str | None, context: int = 2) -> list[tuple[str, str]]:
    """The line diff of two templates as (kind, line): kind ``del`` (only in the default), ``ins`` (only in the
    other), ``same`` (context), ``gap`` (lines left out); empty when they are equal or either is missing."""
    if default is None or other is None or default == other:
        return []
    old, new = default.splitlines(), other.splitlines()
    lines: list[tuple[str, str]] = []
    for group in difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(context):
        if lines:
            lines.append(("gap", "\u22ef"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [("same", line) for line in old[i1:i2]]
                continue
            lines += [("del", line) for line in old[i1:i2]]
            lines += [("ins", line) for line in new[j1:j2]]
    return lines
