"""The session's workflow workers (one per Python) and the LLM proxy their calls come back through.

A worker starts before the first item when a selected item runs a workflow (``start``), else with a
workflow's first row; a session without one starts none. The session activates its ``Workflows`` and
stops it at close; a caller outside a session (a script running a ``maf`` target's rows) gets a
process-wide one, stopped at exit. The worker's environment is this process's when it starts: the SDK fallback
variables the session set (so ``OpenAIChatCompletionClient()`` reaches the embedded model through the
call layer), plus ``PYTEST_PROMPTFLOW_PROXY``.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import SpecError, Where
from ..llm import ledger
from .client import WorkerClient, WorkerGone
from .python import find_python
from .spec import WorkflowSpec

if TYPE_CHECKING:
    from ..flows import RowOutcome, Runner
    from ..llm.proxy import LLMProxy

PROXY_VARIABLE = "PYTEST_PROMPTFLOW_PROXY"


class Workflows:
    """Workers by Python, started ahead of or on a workflow's first row, with the proxy they send LLM calls to."""

    def __init__(self, rootdir: Path, configured_python: str = "") -> None:
        self.rootdir = rootdir
        self.configured_python = configured_python  # ini promptflow_workflow_python
        self._clients: dict[str, WorkerClient] = {}
        self._proxy: LLMProxy | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def runner(self, spec: WorkflowSpec, flow: str, args: Mapping[str, Any]) -> Runner:
        """What runs one row of the workflow with factory arguments ``args``; a workflow that cannot load
        (no Python for it, a module that fails to import, no such factory) is one line."""
        from ..flows import Runner

        where = Where(spec.path)
        _check_json(args, flow, where)
        client = self.client(find_python(self.rootdir, self.configured_python, flow, where))
        try:
            loaded = client.load(spec.path, spec.factory)
        except (WorkerGone, OSError) as error:
            raise SpecError(where, f"flow {flow}: {error}", "fix: check that its Python runs") from None
        if "error" in loaded:
            raise SpecError(None, _flow_line(flow, str(loaded["error"])))
        shape = loaded.get("input") or {}
        names = tuple(str(name) for name in shape.get("fields") or ())  # a dataclass's or model's, by name
        return Runner(lambda inputs: self._run(client, spec, dict(args), inputs), names, takes_row=not names)

    def start(self, spec: WorkflowSpec, flow: str) -> None:
        """Starts the worker the workflow will run in, ahead of its first row; a workflow with no Python for
        it, or one that cannot start, is left to its rows, which say so in one line."""
        try:
            self.client(find_python(self.rootdir, self.configured_python, flow, Where(spec.path))).start()
        except (SpecError, OSError):
            return

    def _run(self, client: WorkerClient, spec: WorkflowSpec, args: Mapping[str, Any],
             inputs: Mapping[str, Any]) -> RowOutcome:
        """One row: its LLM calls (made in the worker, answered through the proxy) count against it."""
        from ..flows import RowOutcome

        run_id = str(next(self._ids))
        with self.proxy.row(run_id, ledger.current()):
            try:
                reply = client.run(spec.path, spec.factory, run_id, args, inputs)
            except (WorkerGone, OSError) as error:
                return RowOutcome(None, "WorkerExited", str(error))
        if isinstance(reply.get("outputs"), Mapping):
            return RowOutcome(reply["outputs"])
        return RowOutcome(None, str(reply.get("error_type") or "WorkflowError"), str(reply.get("error_message") or ""))

    @property
    def proxy(self) -> LLMProxy:
        with self._lock:
            if self._proxy is None:
                from ..llm.proxy import LLMProxy

                self._proxy = LLMProxy()
            return self._proxy

    def client(self, python: str) -> WorkerClient:
        """The worker of ``python``, made (not yet started) with this process's environment as it is now."""
        address = self.proxy.address
        with self._lock:
            if python not in self._clients:
                environ = {**os.environ, PROXY_VARIABLE: address, "PYTHONUNBUFFERED": "1"}
                self._clients[python] = WorkerClient(python, environ, self.rootdir)
            return self._clients[python]

    def stop(self) -> None:
        """Stops every worker, then the proxy."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            proxy, self._proxy = self._proxy, None
        for client in clients:
            client.stop()
        if proxy is not None:
            proxy.stop()


def _check_json(args: Mapping[str, Any], flow: str, where: Where) -> None:
    """Factory arguments cross a pipe as JSON."""
    try:
        json.dumps(dict(args))
    except (TypeError, ValueError) as error:
        raise SpecError(where, f"flow {flow}: its factory arguments are not JSON values ({error})",
                        "fix: give numbers, strings, lists or mappings as overrides and init") from None


def _flow_line(flow: str, error: str) -> str:
    """The worker's one line for a workflow that failed to load, naming the flow."""
    return error if f"flow {flow}" in error else f"flow {flow}: {error}"


_active: Workflows | None = None
_default: Workflows | None = None


def activate(workflows: Workflows | None) -> None:
    """Makes ``workflows`` the one ``maf`` targets run in (None: back to the process-wide default)."""
    global _active
    _active = workflows


def current() -> Workflows:
    """The session's workflows, else a process-wide one rooted at the working directory."""
    global _default
    if _active is not None:
        return _active
    if _default is None:
        _default = Workflows(Path.cwd())
        atexit.register(_default.stop)
    return _default
