"""``additional_includes``: files and folders outside a flow's folder that the flow uses, as ``pf`` resolves them.

A flow.dag.yaml / flow.flex.yaml may list paths relative to its folder (``../shared/utils.py``,
``../common``). ``pf run`` and ``pf flow build`` copy the folder to a temporary one, then copy each include
into its top level under its own name (a file as ``utils.py``, a folder as ``common/...``; ``x.zip`` whose
folder ``x`` exists becomes a zip of that folder) and run the flow there with the key removed
(promptflow's private ``_merge_local_code_and_additional_includes``). The same here: the engine runs the
merged copy and a released package is the merged copy, so it runs without the original tree.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import SpecError, Where

KEY = "additional_includes"
#: Folders and files that runs, editors and tools leave behind; ``.env`` files hold secrets. Never copied.
LITTER_DIRS = frozenset({"__pycache__", ".promptflow", ".runs", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                         ".ipynb_checkpoints", ".git", ".venv", "venv", ".idea", ".vscode"})
LITTER_SUFFIXES = (".pyc", ".pyo")
LITTER_FILES = frozenset({".DS_Store", "Thumbs.db", ".env"})


def is_litter(path: Path) -> bool:
    name = path.name
    return (name in LITTER_DIRS and path.is_dir()) or name in LITTER_FILES or name.startswith(".env.") \
        or name.endswith(LITTER_SUFFIXES)


def _ignored(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree``'s ``ignore`` for a package: the litter among ``names``."""
    return {name for name in names if is_litter(Path(folder) / name)}


def _ignored_to_run(folder: str, names: list[str]) -> set[str]:
    """``shutil.copytree``'s ``ignore`` for the copy a flow runs in: only what runs and tools leave behind (a
    flow may read its ``.env``, as it can under ``pf run``, which copies everything)."""
    return {name for name in names if name in LITTER_DIRS and (Path(folder) / name).is_dir()}


def includes_of(definition: Mapping[str, Any]) -> list[str]:
    return [str(item) for item in definition.get(KEY) or []]


def resolve_includes(flow_file: Path, definition: Mapping[str, Any], flow_name: str) -> list[Path]:
    """Each include as an absolute path; one that does not exist is the one-line error naming it."""
    found = []
    for item in includes_of(definition):
        path = Path(item) if Path(item).is_absolute() else (flow_file.parent / item).resolve()
        if not path.exists() and _zip_source(path) is None:
            raise SpecError(_line_of(flow_file, item), f"flow {flow_name}: additional include {item!r} not found "
                            f"(looked for {path})", "fix the path: additional_includes are relative to the flow "
                            "folder")
        found.append(path)
    return found


def check_includes_inside(flow_file: Path, definition: Mapping[str, Any], flow_name: str, root: Path | None) -> None:
    """Each include that exists is inside ``root`` (None: anywhere): a run and a released package copy it in."""
    from .project_root import check_inside

    for item in includes_of(definition):
        path = Path(item) if Path(item).is_absolute() else flow_file.parent / item
        if path.exists():
            check_inside(path, root, _line_of(flow_file, item), f"flow {flow_name}: additional include")


def copy_includes(includes: list[Path], dest: Path, ignore: Callable[[str, list[str]], set[str]] = _ignored) -> None:
    """Each include into ``dest``'s top level under its own name, as ``pf`` does (an include wins over a file of
    the flow folder with the same name)."""
    for path in includes:
        source = _zip_source(path)
        if source is not None:
            _zip_folder(source, dest / path.name)
        elif path.is_dir():
            shutil.copytree(path, dest / path.name, dirs_exist_ok=True, ignore=ignore)
        else:
            shutil.copy2(path, dest / path.name)


def without_includes(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The flow definition as it reads once its includes are merged in."""
    return {key: value for key, value in definition.items() if key != KEY}


def write_flow_file(definition: Mapping[str, Any], path: Path) -> None:
    """A flow file in block style and the flow's own key order, so it reads like the user's."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    with path.open("w", encoding="utf-8") as stream:
        yaml.dump(dict(definition), stream)


_MERGED: dict[Path, Any] = {}
_MERGED_LOCK = threading.Lock()


def merged_folder(flow_file: Path, definition: Mapping[str, Any], flow_name: str) -> Path:
    """The flow's folder, or, when it has includes, a merged copy made once per process (removed at exit)."""
    includes = resolve_includes(flow_file, definition, flow_name)
    if not includes:
        return flow_file.parent
    with _MERGED_LOCK:
        if flow_file not in _MERGED:
            temp = tempfile.TemporaryDirectory(prefix=f"pytest-promptflow-{flow_name}-")
            folder = Path(temp.name)
            shutil.copytree(flow_file.parent, folder, dirs_exist_ok=True, ignore=_ignored_to_run)
            copy_includes(includes, folder, _ignored_to_run)
            write_flow_file(without_includes(definition), folder / flow_file.name)
            _MERGED[flow_file] = temp
        return Path(_MERGED[flow_file].name)


def original_path(path: Path, merged: Path, flow_file: Path, definition: Mapping[str, Any]) -> Path:
    """Where a file of the merged copy came from: one of the includes (they win, as in ``pf``), else the flow
    folder; a path outside the copy is its own."""
    merged = merged.resolve()
    if merged == flow_file.parent.resolve() or not path.resolve().is_relative_to(merged):
        return path
    relative = path.resolve().relative_to(merged)
    for item in includes_of(definition):
        include = Path(item) if Path(item).is_absolute() else (flow_file.parent / item).resolve()
        if relative.parts[0] == include.name:
            return include.parent / relative
    return flow_file.parent / relative


def _zip_source(path: Path) -> Path | None:
    """The folder an include ``x.zip`` stands for, when there is no such file but a folder ``x``."""
    folder = path.with_suffix("")
    return folder if path.suffix == ".zip" and not path.exists() and folder.is_dir() else None


def _zip_folder(folder: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w") as zipped:
        for root, _, files in os.walk(folder, followlinks=True):
            for name in sorted(files):
                file = Path(root) / name
                zipped.write(file, file.relative_to(folder.parent).as_posix())


def _line_of(flow_file: Path, item: str) -> Where:
    pattern = re.compile(rf"^\s*-\s*['\"]?{re.escape(item)}['\"]?\s*$")
    for number, text in enumerate(flow_file.read_text(encoding="utf-8").splitlines(), 1):
        if pattern.match(text):
            return Where(flow_file, number)
    return Where(flow_file)
