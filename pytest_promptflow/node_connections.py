"""Which inputs of a DAG's python and package-tool nodes are connections, by promptflow's tool metadata.

A node says ``inputs: {conn: my_conn}``; only its tool's signature (``conn: CustomConnection``) tells
that ``my_conn`` is a connection, and of which type. promptflow's own ``ToolLoader`` (private API)
reads that signature the way its executor will; it imports the tool's module, so this runs only
when a flow is about to run, never at collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

#: connection types we can make without credentials, preferred when a tool accepts several
PREFERRED = ("AzureOpenAIConnection", "OpenAIConnection", "CustomConnection")


def typed_connections(nodes: Iterable[Mapping[str, Any]], working_dir: Path) -> dict[str, tuple[str, str]]:
    """Connection name -> (connection type, node name) for every literal node input whose tool
    parameter is typed as a connection. A node whose tool cannot be loaded is skipped: creating
    the executor reports it."""
    from promptflow._core.tools_manager import ToolLoader
    from promptflow._utils.context_utils import inject_sys_path

    parsed = [parsed for parsed in map(_parsed, nodes) if parsed is not None]
    package_keys = [n.source.tool for n in parsed if n.source is not None and n.source.tool]
    found: dict[str, tuple[str, str]] = {}
    with inject_sys_path(working_dir):
        loader = ToolLoader(working_dir, package_tool_keys=package_keys)
        for node in parsed:
            try:
                tool = loader.load_tool_for_node(node)
            except (Exception, SystemExit):  # noqa: BLE001 - the executor's own load reports this node's problem
                continue
            for key, assignment in node.inputs.items():
                kind = _connection_type(tool.inputs.get(key))
                if kind and isinstance(assignment.value, str) and _is_literal(assignment):
                    found.setdefault(assignment.value, (kind, str(node.name)))
    return found


def _parsed(node: Mapping[str, Any]) -> Any:
    """promptflow's Node for a node with a tool, else None (also for one it cannot parse: its load says why)."""
    from promptflow.contracts.flow import Node

    if not _has_tool(node):
        return None
    try:
        return Node.deserialize(dict(node))
    except Exception:  # noqa: BLE001 - the executor's own load reports this node's problem
        return None


def _has_tool(node: Mapping[str, Any]) -> bool:
    return node.get("type") in ("python", "custom_llm") and isinstance(node.get("source"), Mapping)


def _is_literal(assignment: Any) -> bool:
    from promptflow.contracts.flow import InputValueType

    return assignment.value_type == InputValueType.LITERAL


def _connection_type(tool_input: Any) -> str | None:
    """The connection type a tool input takes (one we can make, if it takes several), else None."""
    from promptflow.contracts.tool import ConnectionType

    names = [str(getattr(t, "value", t)) for t in getattr(tool_input, "type", None) or []]
    kinds = [name for name in names if ConnectionType.is_connection_class_name(name)]
    if not kinds:
        return None
    return next((kind for kind in PREFERRED if kind in kinds), kinds[0])
