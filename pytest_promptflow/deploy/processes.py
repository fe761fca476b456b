"""The local target's processes told apart by their command line: pids are reused, so a recorded pid is
ours only while it still runs our module with the path it was started for (Linux ``/proc``; elsewhere the
pid is trusted and no stray is found)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

from pytest_promptflow.llm.embedded import pid_alive

_PROC = Path("/proc")


def runs(pid: int | None, module: str, path: str) -> bool:
    """Whether ``pid`` is alive (a zombie is not) and runs ``python -m module`` with argument ``path``."""
    if not pid or not pid_alive(pid):
        return False
    arguments = _arguments(pid)
    return arguments is None or (module in arguments and path in arguments)


def strays(modules: Sequence[str], folder: Path, known: set[int]) -> Iterator[int]:
    """Live pids, not in ``known``, that run one of ``modules`` with an argument under ``folder``: what a
    deploy killed before it recorded them left behind."""
    prefix = f"{folder}{os.sep}"
    for entry in _PROC.glob("[0-9]*"):
        pid = int(entry.name)
        arguments = _arguments(pid) or []
        if pid not in known and any(module in arguments for module in modules) \
                and any(argument.startswith(prefix) for argument in arguments) and pid_alive(pid):
            yield pid


def _arguments(pid: int) -> list[str] | None:
    """The command line of ``pid`` (empty once it is gone); None where there is no /proc to tell."""
    try:
        return os.fsdecode(_PROC.joinpath(str(pid), "cmdline").read_bytes()).split("\0")
    except OSError:
        return [] if _PROC.is_dir() else None
