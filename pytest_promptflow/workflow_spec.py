"""Naming an agent-framework workflow (``maf:path/to/workflow.py:create_workflow``) and the second
environment's python that runs it (session side; the maf flow kind reads the same spec)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError, Where

PREFIX = "maf:"
#: The second environment's python, relative to the project root, unless ini ``promptflow_workflow_python`` says.
DEFAULT_PYTHON = Path(".promptflow-envs/maf/bin/python")


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow module and the factory in it that builds a fresh workflow."""

    path: Path  # absolute
    factory: str


def parse_workflow(spec: str, base_dir: Path, where: Where | str | None = None) -> WorkflowSpec:
    """``maf:flows/x/workflow.py:create_workflow`` (the path relative to ``base_dir``) as a WorkflowSpec."""
    module, sep, factory = spec.removeprefix(PREFIX).rpartition(":")
    if not spec.startswith(PREFIX) or not sep or not module or not factory.isidentifier():
        raise SpecError(where, f"{spec!r} does not name a workflow",
                        "write maf:path/to/workflow.py:create_workflow (module path, then its factory)")
    path = Path(module) if Path(module).is_absolute() else base_dir / module
    if not path.is_file():
        raise SpecError(where, f"workflow module {module} not found (looked for {path})",
                        "give the path of the workflow's .py file relative to the project root")
    return WorkflowSpec(path.resolve(), factory)


def workflow_python(rootdir: Path, configured: str = "") -> Path:
    """The python that runs workflows: ini ``promptflow_workflow_python`` (relative to the project root), else
    ``<rootdir>/.promptflow-envs/maf/bin/python``; one line saying how to get one when it is missing."""
    path = Path(configured) if configured else DEFAULT_PYTHON
    path = path if path.is_absolute() else rootdir / path
    if not path.is_file():
        raise SpecError(path, "no python of a second environment for agent-framework workflows here",
                        "run `pytest-promptflow env maf`, or set ini promptflow_workflow_python to one")
    return path
