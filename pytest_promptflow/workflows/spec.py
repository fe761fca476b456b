"""``maf:path/to/workflow.py:create_workflow``: an agent-framework workflow named as a flow.

The path is relative like other flows (to the project root in a marker, to the experiment's folder in
experiment.yaml); the factory defaults to ``create_workflow``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpecError, Where

PREFIX = "maf:"
DEFAULT_FACTORY = "create_workflow"
EXAMPLE = 'flow="maf:flows/<name>/workflow.py:create_workflow"'


@dataclass(frozen=True)
class WorkflowSpec:
    """The module file that defines a workflow factory, and the factory's name."""

    path: Path
    factory: str = DEFAULT_FACTORY

    def __str__(self) -> str:
        return f"{PREFIX}{self.path}:{self.factory}"

    @property
    def name(self) -> str:
        """The flow's name: its folder's, as a flow folder names a promptflow flow."""
        return self.path.parent.name or self.path.stem


def is_workflow(flow: Any) -> bool:
    """Whether a flow argument names a workflow (``maf:...``)."""
    return isinstance(flow, str) and flow.strip().startswith(PREFIX)


def split(flow: str) -> tuple[str, str]:
    """(module path as written, factory) of a ``maf:`` flow; no factory named (or a colon of a Windows drive):
    ``create_workflow``."""
    text = flow.strip()[len(PREFIX):]
    module, _, factory = text.rpartition(":")
    return (module, factory) if module and factory.isidentifier() else (text, DEFAULT_FACTORY)


def parse(flow: str, base_dir: Path, where: Where | None = None) -> WorkflowSpec:
    """The workflow ``flow`` names, its path resolved against ``base_dir``; a missing module is one line."""
    module, factory = split(flow)
    path = Path(module)
    path = path if path.is_absolute() else base_dir / path
    if not module.strip() or path.suffix != ".py" or not path.is_file():
        raise SpecError(where, f"flow {flow!r}: workflow module {path} not found",
                        f"give the .py file that defines the factory, e.g. {EXAMPLE}")
    return WorkflowSpec(path.resolve(), factory)
