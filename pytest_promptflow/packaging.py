"""A flow as it is released: a copy of its folder with the chosen variants and overrides applied.

For a DAG the released ``flow.dag.yaml`` is the one the suite ran: ``resolve_dag`` inlines the chosen
variant of every node (so ``node_variants`` is gone) and writes the overrides into the node inputs.
Inlined rather than marked by ``default_variant_id`` because then the package *is* what was tested:
promptflow's serving, an Azure ML deployment or a later edit cannot pick another variant, and an
override lands in exactly one node instead of in a variant that might not be the one used.

The content hash is sha256 over the sorted relative paths and the bytes of every packaged file, so
the same flow, variants and overrides give the same hash on every run and machine.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from .errors import SpecError, Where
from .flows import DAG_FILE, FLEX_FILE, FlowTarget, resolve_dag
from .includes import copy_includes, is_litter, resolve_includes, without_includes, write_flow_file

#: A flex class entry's init arguments, written beside flow.flex.yaml (names of connections, never keys).
INIT_FILE = "flow.init.json"
#: A packaged workflow's module, factory and factory arguments (workflows/serve.py reads it under this name).
WORKFLOW_MANIFEST = "flow.maf.json"
_FILE_REFERENCE = re.compile(r"\$\{file:([^}]+)\}")


def package_flow(
    target: FlowTarget,
    variants: Mapping[str, str],
    overrides: Mapping[str, Any],
    dest: Path,
    init: Mapping[str, Any] | None = None,
) -> tuple[Path, str]:
    """Copy ``target`` into ``dest`` (created; must be empty) as released; returns ``dest`` and its hash.

    ``init`` is a flex class entry's init arguments (written to ``flow.init.json``); other kinds ignore it.
    """
    where = Where(target.path) if target.path is not None else Where(target.name)
    if target.kind == "maf" and target.path is not None:  # variants are none; init and overrides: factory arguments
        factory = str(target.definition.get("factory") or "create_workflow")
        return package_workflow(target.path, factory, {**(init or {}), **overrides}, dest)
    if target.kind == "callable" or target.path is None:
        raise SpecError(where, f"flow {target.name!r} is a Python callable and cannot be packaged or registered",
                        "release a promptflow flow (a folder with flow.dag.yaml or flow.flex.yaml, or a .prompty "
                        "file; a callable becomes a flex flow with entry: module:function) or leave it out of "
                        "the release")
    if target.kind != "dag" and (variants or overrides):
        given = ", ".join([*variants, *overrides])
        raise SpecError(where, f"{target.kind} flow {target.name!r} has no nodes, so its runs did not apply {given}",
                        "remove the variants and overrides of this flow from its configuration")
    if target.kind == "dag":
        _check_variants(target, variants, where)
        target.check_overrides(overrides, where)
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"package destination {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    if target.kind == "prompty":
        _copy_prompty(target.path, dest)
    else:
        _copy_folder(target.path.parent, dest)
        _merge_includes(target, dest)
    if target.kind == "dag" and (target.definition.get("node_variants") or overrides):
        write_flow_file(resolve_dag(target.definition, variants, overrides), dest / DAG_FILE)
    if target.kind == "flex" and init:
        (dest / INIT_FILE).write_text(_init_json(init, where), encoding="utf-8")
    return dest, content_hash(dest)


def package_workflow(path: Path, factory: str, args: Mapping[str, Any], dest: Path) -> tuple[Path, str]:
    """An agent-framework workflow as released: its module's folder copied into ``dest`` (created; must be
    empty) with ``flow.maf.json`` naming the module, the factory and its arguments; ``dest`` and its hash."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"package destination {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    _copy_folder(path.parent, dest)
    manifest = {"module": path.name, "factory": factory, "args": dict(args)}
    try:
        (dest / WORKFLOW_MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    except TypeError as error:
        raise SpecError(Where(path), f"factory arguments cannot be released: {error}",
                        "give the workflow's factory plain JSON values") from None
    return dest, content_hash(dest)


def is_workflow(folder: Path) -> bool:
    """Whether ``folder`` is a packaged agent-framework workflow (served by the second environment's python)."""
    return (folder / WORKFLOW_MANIFEST).is_file()


def flow_file(folder: Path) -> Path:
    """The packaged flow's file: flow.dag.yaml, flow.flex.yaml, or its one .prompty."""
    for name in (DAG_FILE, FLEX_FILE):
        if (folder / name).is_file():
            return folder / name
    prompties = sorted(folder.glob("*.prompty"))
    if len(prompties) != 1:
        raise FileNotFoundError(f"{folder} holds no packaged flow (flow.dag.yaml, flow.flex.yaml or one .prompty)")
    return prompties[0]


def content_hash(folder: Path) -> str:
    """sha256 over the sorted relative paths (POSIX) and the bytes of every file under ``folder``."""
    digest = hashlib.sha256()
    for relative, path in sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file()):
        digest.update(relative.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _copy_folder(source: Path, dest: Path) -> None:
    """Every file of ``source`` except run litter and secrets, keeping the layout (symlinks followed)."""
    skip = dest.resolve()
    for path in sorted(source.iterdir()):
        if is_litter(path) or path.resolve() == skip:
            continue
        if path.is_dir():
            (dest / path.name).mkdir()
            _copy_folder(path, dest / path.name)
        elif path.is_file():
            shutil.copyfile(path, dest / path.name)


def _copy_prompty(path: Path, dest: Path) -> None:
    """The .prompty file and the files its front matter names with ``${file:...}``, not its whole folder
    (a prompty often sits in a folder of other flows)."""
    shutil.copyfile(path, dest / path.name)
    front_matter = path.read_text(encoding="utf-8").split("---", 2)[1]
    folder = path.parent.resolve()
    for reference in sorted(set(_FILE_REFERENCE.findall(front_matter))):
        source = (folder / reference.strip()).resolve()
        if not source.is_relative_to(folder) or not source.is_file():
            raise SpecError(Where(path), f"${{file:{reference}}} is not a file in the prompty's folder",
                            "keep the files a prompty reads beside it (or in a folder below it)")
        target = dest / source.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _check_variants(target: FlowTarget, variants: Mapping[str, str], where: Where) -> None:
    node_variants = target.node_variants()
    for node, variant in variants.items():
        if node not in node_variants:
            raise SpecError(where, f"node {node!r} has no variants (nodes with variants: "
                            f"{', '.join(sorted(node_variants)) or 'none'})", "release a variant of one of those")
        if variant not in node_variants[node][1]:
            raise SpecError(where, f"node {node!r} has no variant {variant!r}",
                            f"choose one of {', '.join(node_variants[node][1])}")


def _merge_includes(target: FlowTarget, dest: Path) -> None:
    """The flow's ``additional_includes`` copied in as ``pf flow build`` does, and the key dropped from the
    packaged flow file: every deployment target builds from the package, without the original tree."""
    assert target.path is not None
    includes = resolve_includes(target.path, target.definition, target.name)
    if includes:
        copy_includes(includes, dest)
        write_flow_file(without_includes(target.definition), dest / target.path.name)


def _init_json(init: Mapping[str, Any], where: Where) -> str:
    try:
        return json.dumps(dict(init), sort_keys=True, indent=2) + "\n"
    except TypeError as error:
        raise SpecError(where, f"init arguments cannot be released: {error}",
                        "give the flex flow's init plain JSON values (connections by name)") from None
