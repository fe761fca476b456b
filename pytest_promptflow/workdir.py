"""The flow's folder as the working directory while promptflow loads and runs it, as under ``pf run``.

A flow may ``open("data/x.txt")`` relative to its folder. The working directory belongs to the whole
process, so it is leased, not set: any number of threads may hold it for the same folder at once (the rows
of one cell run concurrently and all want the same one); the first changes into the folder, the last one
out changes back to where the process was, also when a row raised. A thread asking for another folder (an
evaluator's, or the next cell's) waits until the current folder's holders are done. That wait is short and
cannot go round in a circle: one process runs one cell at a time (the engine's lock) and an evaluator scores
a run after its rows are done; a thread that already holds a lease and asks for another folder (a flow
calling another flow) keeps the folder it has instead of waiting on itself. xdist workers are processes,
each with its own working directory. Outside a lease (pytest's own work) the working directory is the one
pytest started in.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Iterator

_CHANGED = threading.Condition()
_state: dict[str, Any] = {"folder": None, "holders": 0, "home": None}
_held = threading.local()


@contextlib.contextmanager
def working_directory(folder: Path | None) -> Iterator[None]:
    """Run the body with ``folder`` as the working directory (nothing changes for ``None``)."""
    depth: int = getattr(_held, "depth", 0)
    if folder is None or depth:
        _held.depth = depth + 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    folder = folder.resolve()
    with _CHANGED:
        while _state["holders"] and _state["folder"] != folder:
            _CHANGED.wait()
        if not _state["holders"]:
            _state["home"] = os.getcwd()
            os.chdir(folder)
            _state["folder"] = folder
        _state["holders"] += 1
    _held.depth = 1
    try:
        yield
    finally:
        _held.depth = 0
        with _CHANGED:
            _state["holders"] -= 1
            if not _state["holders"]:
                os.chdir(_state["home"])
                _state["folder"] = None
                _CHANGED.notify_all()


class InFolder:
    """promptflow's executor whose lines and aggregation run in the flow's folder; otherwise the executor."""

    def __init__(self, executor: Any, folder: Path | None) -> None:
        self.executor = executor
        self.folder = folder

    def exec_line(self, *args: Any, **kwargs: Any) -> Any:
        with working_directory(self.folder):
            return self.executor.exec_line(*args, **kwargs)

    def exec_aggregation(self, *args: Any, **kwargs: Any) -> Any:
        with working_directory(self.folder):
            return self.executor.exec_aggregation(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.executor, name)
