"""A flow file's shape, checked when it is read at collection: the parts this plugin reads before promptflow
does (nodes, node_variants, a prompty's model and inputs). A wrong shape is one line at the key's line,
not a traceback that stops the session; what promptflow checks itself is its load error when the flow runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from .errors import SpecError, Where

DAG_FIX = "see promptflow's flow.dag.yaml schema"
PROMPTY_FIX = "see promptflow's prompty format"


def check_dag(definition: Mapping[str, Any], path: Path) -> None:
    """flow.dag.yaml: mappings where mappings go, ``nodes`` a list of named mappings, variants that exist."""
    for key in ("inputs", "outputs", "node_variants"):
        _mapping(definition, key, path, f"flow file: {key}", DAG_FIX)
    nodes = definition.get("nodes")
    if nodes is not None and not isinstance(nodes, list):
        raise SpecError(_key_line(path, "nodes"), f"flow file: nodes must be a list, got {_kind(nodes)}",
                        "write 'nodes:' followed by '- name: ...' items")
    for index, node in enumerate(nodes or [], 1):
        if not isinstance(node, Mapping) or not isinstance(node.get("name"), str) or not node["name"].strip():
            raise SpecError(_key_line(path, "nodes"), f"flow file: node #{index} is not a mapping with a name",
                            "give every node '- name: <name>' and its type, source and inputs")
    variants = definition.get("node_variants") or {}
    for name, config in variants.items():
        _node_variants(name, config, path)
    for node in nodes or []:
        if node.get("use_variants") and node["name"] not in variants:
            raise SpecError(_key_line(path, "name", node["name"]), f"flow file: node {node['name']!r} uses "
                            "variants but node_variants has none for it", f"add node_variants: {node['name']}: ...")


def _node_variants(name: str, config: Any, path: Path) -> None:
    where = _key_line(path, str(name))
    if not isinstance(config, Mapping) or not isinstance(config.get("variants"), Mapping) or not config["variants"]:
        raise SpecError(where, f"flow file: node_variants {name!r} has no mapping of variants",
                        "write 'variants:' with '<variant id>: {node: ...}' entries under it")
    for variant, body in config["variants"].items():
        if not isinstance(body, Mapping) or not isinstance(body.get("node"), Mapping):
            raise SpecError(_key_line(path, str(variant)), f"flow file: variant {variant!r} of node {name!r} has "
                            "no node mapping", "write 'node:' with the node's type, source and inputs under it")
    default = config.get("default_variant_id")
    if default is not None and default not in config["variants"]:
        raise SpecError(_key_line(path, "default_variant_id", str(default)), f"flow file: node {name!r} has no "
                        f"variant {default!r} (default_variant_id)", f"use one of {', '.join(config['variants'])}")


def check_flex(definition: Mapping[str, Any], path: Path) -> None:
    """flow.flex.yaml: ``entry`` a ``module:function`` text, ``inputs`` and ``init`` mappings."""
    entry = definition.get("entry")
    if not isinstance(entry, str) or ":" not in entry:
        raise SpecError(_key_line(path, "entry"), f"flow file: entry must be 'module:function' or 'module:Class', "
                        f"got {_kind(entry)}", "write e.g. 'entry: flow:chat'")
    for key in ("inputs", "outputs", "init"):
        _mapping(definition, key, path, f"flow file: {key}", "see promptflow's flow.flex.yaml schema")


def check_prompty(definition: Mapping[str, Any], path: Path) -> None:
    """A prompty's front matter: ``model`` and its ``configuration`` and ``parameters``, and ``inputs`` mappings."""
    _mapping(definition, "model", path, "prompty front matter: model", PROMPTY_FIX)
    model = definition.get("model") or {}
    for key in ("configuration", "parameters"):
        _mapping(model, key, path, f"prompty front matter: model.{key}", PROMPTY_FIX)
    connection = (model.get("configuration") or {}).get("connection")
    if connection is not None and not isinstance(connection, str):
        raise SpecError(_key_line(path, "connection"), f"prompty front matter: connection must be a connection's "
                        f"name, got {_kind(connection)}", "write e.g. 'connection: aoai'")
    _mapping(definition, "inputs", path, "prompty front matter: inputs", PROMPTY_FIX)


def _mapping(node: Mapping[str, Any], key: str, path: Path, what: str, fix: str) -> None:
    value = node.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise SpecError(_key_line(path, key), f"{what} must be a mapping, got {_kind(value)}", fix)


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"


def _key_line(path: Path, key: str, value: str | None = None) -> Where:
    """The file at the first line that holds ``key:`` (with ``value`` when given), else the file."""
    tail = rf"\s*['\"]?{re.escape(value)}['\"]?\s*$" if value is not None else ""
    pattern = re.compile(rf"^\s*-?\s*['\"]?{re.escape(key)}['\"]?\s*:{tail}")
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if pattern.match(text):
            return Where(path, number)
    return Where(path)
