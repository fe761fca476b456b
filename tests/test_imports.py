"""Arrows point down (issue 16, item 4): read with ast, every import in the package, at the top of a module
or inside a function (where cycles used to hide), and no module below the plugin imports it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "pytest_promptflow"
PLUGIN = "pytest_promptflow.plugin"
#: the command side: they run without a session and read the plugin's option declarations and settings code
ABOVE_PLUGIN = {"pytest_promptflow.cli", "pytest_promptflow.project_config"}
#: what a release runs on, with a session or without one: never the session's modules
RELEASE_SIDE = ("pytest_promptflow.release", "pytest_promptflow.deploy.", "pytest_promptflow.registry.")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports anywhere in its text (``from . import x`` names module x)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in paths}
    return {_module_name(path): _imports(path, modules) for path in paths}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path of imports from ``start`` to ``goal``, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for module in sorted(graph[path[-1]]):
            if module == goal:
                return [*path, module]
            if module not in seen:
                seen.add(module)
                stack.append([*path, module])
    return None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "pytest_promptflow.release" in graph[PLUGIN] and "pytest_promptflow.session" in graph[PLUGIN]
    assert "pytest_promptflow.deploy.stage" in graph["pytest_promptflow.release"]  # a function-level import


def test_no_module_below_the_plugin_imports_it() -> None:
    graph = _graph()
    importers = sorted(module for module, imported in graph.items() if PLUGIN in imported)
    assert set(importers) <= ABOVE_PLUGIN, importers


def test_no_import_cycle_runs_through_the_plugin() -> None:
    assert _reaches(_graph(), PLUGIN, PLUGIN) is None


def test_the_release_deploy_and_registry_modules_import_neither_plugin_nor_session() -> None:
    graph = _graph()
    wrong = {module: sorted(imported & {PLUGIN, "pytest_promptflow.session"}) for module, imported in graph.items()
             if module.startswith(RELEASE_SIDE)}
    assert not {module: names for module, names in wrong.items() if names}
