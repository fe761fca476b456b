"""report.json's contract: its ``schema_version`` and its JSON schema (``report.schema.json`` beside this
module, shipped with the package), checked by every command that acts on a document it did not write itself
(``release``, ``merge``). The core does not depend on jsonschema, so the schema's few keywords (type, required,
properties, items, const, enum) are read here; tests check the schema and real documents with jsonschema."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError, Where

SCHEMA_VERSION = 2
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
_TYPES: Mapping[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
    "boolean": (bool,), "null": (type(None),)}
FIX = "point at a report.json (or a report folder) written by this version of pytest-promptflow, or rerun the suite"


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The shipped schema, read once."""
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def read_document(path: Path) -> dict[str, Any]:
    """The checked document at ``path`` (a report.json or a report folder), or a SpecError naming the file and
    what is wrong."""
    path = path / "report.json" if path.is_dir() else path
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SpecError(Where(path), f"cannot read the report ({error})", FIX) from None
    check_document(document, path)
    assert isinstance(document, dict)  # checked above: the schema's root is an object
    return document


def check_document(document: Any, path: Path | str) -> None:
    """Nothing when ``document`` fits the schema; else a SpecError with the first thing wrong."""
    found = problem(document)
    if found:
        raise SpecError(Where(path), found, FIX)


def problem(document: Any) -> str:
    """The first way ``document`` breaks the schema ("" when it fits); an old version is said as such."""
    if isinstance(document, dict) and document.get("schema_version") != SCHEMA_VERSION:
        written = document.get("schema_version", document.get("version"))
        return (f"is a report of schema_version {written!r}, this pytest-promptflow reads schema_version "
                f"{SCHEMA_VERSION}" if written is not None else "is no pytest-promptflow report (no schema_version)")
    return _violation(document, schema(), "the document")


def _violation(value: Any, rule: Mapping[str, Any], where: str) -> str:
    """The first way ``value`` (at ``where``) breaks ``rule``, or ""."""
    if "const" in rule and value != rule["const"]:
        return f"{where} is {value!r}, not {rule['const']!r}"
    if "enum" in rule and value not in rule["enum"]:
        return f"{where} is {value!r}, not one of {', '.join(map(repr, rule['enum']))}"
    types = rule.get("type")
    if types is not None and not _has_type(value, [types] if isinstance(types, str) else types):
        return f"{where} is {_type_name(value)}, not {' or '.join([types] if isinstance(types, str) else types)}"
    if isinstance(value, dict):
        missing = [key for key in rule.get("required", []) if key not in value]
        if missing:
            return f"{where} has no {missing[0]!r}"
        for key, inner in rule.get("properties", {}).items():
            if key in value:
                found = _violation(value[key], inner, f"{where}.{key}" if where != "the document" else key)
                if found:
                    return found
    if isinstance(value, list) and "items" in rule:
        for index, inner_value in enumerate(value):
            found = _violation(inner_value, rule["items"], f"{where}[{index}]")
            if found:
                return found
    return ""


def _has_type(value: Any, types: list[str]) -> bool:
    """JSON's types: a bool is no integer, an integer is a number."""
    if isinstance(value, bool):
        return "boolean" in types
    return any(isinstance(value, _TYPES[name]) for name in types)


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
