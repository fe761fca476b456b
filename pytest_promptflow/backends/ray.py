"""Rows on a Ray cluster (``--promptflow-backend ray --promptflow-ray-address ADDR``).

One actor per CPU of the cluster loads each cell's flow once and runs the rows sent to it in batches with
``engine.run_row``; the rows come back in order as ``engine.Row``. What recreates the flow is shipped, never a
loaded flow: the ``FlowTarget`` (a flow file's path and definition; a callable by reference, its module's folder
put on the worker's path first), the variants, overrides, connections and init.

The workers' LLM requests go to this session's LLM proxy (``llm/proxy.py``, as a workflow worker's do), so the
store, replay, limits and counting all happen here, for the whole cluster: a row's calls are counted against it
in this process. The proxy listens on 127.0.0.1 only, so every node must be this machine (a local cluster); a
remote node would need a tunnel to the driver's proxy address. A flow file's path must exist on every node
(the same checkout) and every node must import pytest-promptflow (the same environment).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import pickle
import socket
import sys
import threading
from collections import deque
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..engine import TICK, CellWork, Engine, Row, RowObserver, RowWork, run_row
from ..errors import SpecError
from ..extras import ExtraMissing, require
from ..flows import FlowTarget, Runner
from ..llm import ledger

OPTION = "--promptflow-ray-address"
#: batches per actor a cell's rows are cut into (more: finer balance and progress; fewer: less overhead)
BATCHES_PER_ACTOR = 4
MAX_BATCH = 1000  # rows
IN_FLIGHT = 2  # batches queued per actor, so it never waits for the next one
CONNECT_SECONDS = 5.0


def make(getoption: Callable[[str], Any]) -> RayBackend:
    """The backend for ``--promptflow-ray-address``; a missing address, an unreachable cluster or no ray is one
    usage line naming the option and the fix. Connects on the first cell, not here."""
    import pytest

    address = (getoption("promptflow_ray_address") or "").strip()
    try:
        require("ray", "--promptflow-backend ray")
    except ExtraMissing as missing:
        raise pytest.UsageError(f"pytest-promptflow: {missing}") from None
    if not address:
        raise pytest.UsageError(f"pytest-promptflow: --promptflow-backend ray needs {OPTION} HOST:PORT, the head "
                                "node's address; fix: start a cluster with `ray start --head --port PORT` and give "
                                f"{OPTION} 127.0.0.1:PORT")
    problem = unreachable(address)
    if problem:
        raise pytest.UsageError(f"pytest-promptflow: {OPTION} {address}: no Ray cluster answers there ({problem}); "
                                "fix: start it with `ray start --head --port PORT` or give its head node's HOST:PORT")
    return RayBackend(address, getoption("promptflow_concurrency") or 1)


def unreachable(address: str) -> str:
    """Why nothing listens at a ``host:port`` (or ``ray://host:port``) address; '' when something does, or for
    ``auto``, which Ray resolves itself."""
    if address == "auto":
        return ""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return "not HOST:PORT"
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as error:
        return error.strerror or type(error).__name__
    return ""


@dataclass(frozen=True)
class FlowRecipe:
    """What a worker loads a cell's flow from: its target (pickled by reference), how, and where its module is."""

    key: str  # the same flow, variants, overrides and init: loaded once per worker
    target: bytes  # the FlowTarget, pickled by this process
    variants: Mapping[str, str]
    overrides: Mapping[str, Any]
    connections: Mapping[str, Any]
    init: Mapping[str, Any] | None
    paths: tuple[str, ...] = ()  # put on the worker's sys.path before the target is unpickled


@dataclass
class _Batch:
    """Rows sent to one actor in one task, with the counts their LLM calls make here (through the proxy)."""

    rows: Sequence[RowWork]
    run_ids: tuple[str, ...]
    calls: tuple[ledger.RowCalls, ...]
    waits: ExitStack = field(default_factory=ExitStack)


class RayBackend:
    """Actors on the cluster at ``address``, made on the first cell and kept for the session."""

    def __init__(self, address: str, threads: int = 1) -> None:
        self.address = address
        self.threads = max(1, threads)  # rows at once inside one actor (--promptflow-concurrency)
        self._actors: list[Any] = []
        self._connected = False  # we called ray.init, so close calls ray.shutdown
        self._proxy: Any = None
        self._keys: dict[tuple[str, ...], str] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """Where rows run, for the collection header."""
        return f"rows on the Ray cluster at {self.address}, {self.threads} at a time per worker"

    def run_rows(self, work: CellWork, observer: RowObserver | None) -> list[Row]:
        if work.target.kind == "maf":  # a workflow runs in the session's workflow worker, not on the cluster
            runner = work.target.executor(dict(work.cell.variants), dict(work.cell.overrides), work.connections,
                                          work.init)
            return Engine(self.threads).map(lambda row: run_row(runner, row), work.rows, observer)
        import ray

        actors = self._start()
        recipe = ray.put(self._recipe(work))
        size = batch_size(len(work.rows), len(actors))
        batches = [self._batch(work.rows[i:i + size]) for i in range(0, len(work.rows), size)]
        try:
            return self._dispatch(actors, recipe, batches, observer)
        finally:
            for batch in batches:  # a run cut short (interrupted) keeps no row waiting at the proxy
                batch.waits.close()

    def _dispatch(self, actors: Sequence[Any], recipe: Any, batches: Sequence[_Batch],
                  observer: RowObserver | None) -> list[Row]:
        """The batches over the actors, ``IN_FLIGHT`` at a time each; the rows in order."""
        import ray

        done: list[list[Row]] = [[] for _ in batches]
        numbered = deque(enumerate(batches))
        free = deque(actor for actor in actors for _ in range(IN_FLIGHT))
        pending: dict[Any, tuple[int, Any, _Batch]] = {}
        while numbered or pending:
            while numbered and free:
                number, batch = numbered.popleft()
                actor = free.popleft()
                ref = actor.run.remote(recipe, list(batch.rows), batch.run_ids, self.threads)
                pending[ref] = (number, actor, batch)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=TICK)
            for ref in ready:
                number, actor, batch = pending.pop(ref)
                free.append(actor)
                done[number] = _collected(ref, batch)
                _heard(observer, done[number])
            if observer is not None:
                observer.tick()
        return [row for rows in done for row in rows]

    def _batch(self, rows: Sequence[RowWork]) -> _Batch:
        """A batch whose rows' LLM calls, arriving at the proxy, count against their own ``RowCalls``."""
        run_ids = tuple(f"ray-{next(self._ids)}" for _ in rows)
        calls = tuple(ledger.RowCalls(row.site, row.repeat) for row in rows)
        batch = _Batch(rows, run_ids, calls)
        for run_id, counted in zip(run_ids, calls, strict=True):
            batch.waits.enter_context(self._proxy.row(run_id, counted))
        return batch

    def _recipe(self, work: CellWork) -> FlowRecipe:
        cell = work.cell
        variants, overrides = dict(cell.variants), dict(cell.overrides)
        identity = (work.target.identity, repr(sorted(variants.items())), repr(sorted(overrides.items())),
                    repr(sorted((work.init or {}).items())))
        with self._lock:
            key = self._keys.setdefault(identity, f"flow-{len(self._keys) + 1}")
        import ray.cloudpickle

        return FlowRecipe(key, ray.cloudpickle.dumps(work.target), variants, overrides, dict(work.connections),
                          work.init, module_roots(work.target))

    def _start(self) -> list[Any]:
        """Connects to the cluster and makes one actor per CPU, once; a cluster that cannot be reached is one
        line naming the option."""
        with self._lock:
            if self._actors:
                return self._actors
            import ray

            from ..llm.proxy import LLMProxy

            try:
                if not ray.is_initialized():
                    ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
                    self._connected = True
                cpus = int(ray.cluster_resources().get("CPU", 1))
            except Exception as error:  # ray's own: a cluster that went away, a version that differs
                raise SpecError(None, f"{OPTION} {self.address}: cannot connect to the Ray cluster "
                                f"({one_line(error)})", "fix: check that `ray status` answers there") from None
            self._proxy = LLMProxy()
            # a dead worker comes back (loading its flows again); a batch it was running or was sent is tried once
            # more there, so only a batch that kills its worker twice fails (its rows, in one line each)
            worker = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=1)(RowWorker)
            environ = sdk_environment()
            self._actors = [worker.remote(self._proxy.address, environ) for _ in range(max(1, cpus))]
            return self._actors

    def close(self) -> None:
        """Leaves the cluster running: only this session's actors go (with its connection, if it made one)."""
        with self._lock:
            actors, self._actors = self._actors, []
            proxy, self._proxy = self._proxy, None
        if actors:
            import ray

            for actor in actors:
                ray.kill(actor)
            if self._connected:
                ray.shutdown()
                self._connected = False
        if proxy is not None:
            proxy.stop()


def _heard(observer: RowObserver | None, rows: Sequence[Row]) -> None:
    if observer is not None:
        for row in rows:
            observer.row_done(row)


def batch_size(rows: int, actors: int) -> int:
    """Rows per task: a few batches per actor, at most ``MAX_BATCH`` rows each."""
    return max(1, min(MAX_BATCH, math.ceil(rows / (max(1, actors) * BATCHES_PER_ACTOR))))


def _collected(ref: Any, batch: _Batch) -> list[Row]:
    """The batch's rows with the counts of their LLM calls made here; a task that died fails its rows in one
    line each."""
    import ray

    try:
        rows: list[Row] = ray.get(ref)
    except Exception as error:  # its worker died twice, or the batch could not be sent or returned
        rows = [_failed(work, f"{_what_failed(error)}: {one_line(error)}") for work in batch.rows]
    finally:
        batch.waits.close()
    return [replace(row, llm_calls=calls.llm_calls, cache_hits=calls.cache_hits, prompt_tokens=calls.prompt_tokens,
                    completion_tokens=calls.completion_tokens, cost=calls.cost,
                    replay_misses=tuple(calls.replay_misses), calls=tuple(calls.transcript))
            for row, calls in zip(rows, batch.calls, strict=True)]


def _what_failed(error: Exception) -> str:
    from ray.exceptions import RayActorError

    if isinstance(error, RayActorError):  # ActorUnavailableError too
        return "the Ray worker running it exited (its batch was tried twice)"
    return "the Ray task running it failed"


def _failed(work: RowWork, message: str) -> Row:
    return Row(work.index, work.data, work.inputs, None, "RayTaskError", message, 0.0, identity=work.identity,
               repeat=work.repeat)


def one_line(error: BaseException) -> str:
    """A Ray error in one line: a task's own exception (the last line of its traceback), else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if type(error).__name__.startswith("RayTaskError") else lines[0]


def module_roots(target: FlowTarget) -> tuple[str, ...]:
    """The folder a callable's module is imported from (a test module under pytest's rootdir, say), so the worker
    can unpickle it by reference."""
    module = sys.modules.get(getattr(target.func, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if target.func is None or module is None or not file:
        return ()
    depth = module.__name__.count(".") + (Path(file).name == "__init__.py")
    return (str(Path(file).resolve().parents[depth]),)


def sdk_environment() -> dict[str, str]:
    """The SDK fallback variables this session set (``llm.sdk_environment``: no secret in them), so a flow's
    ``OpenAI()`` in a worker reaches the call layer as here."""
    from ..llm.sdk_environment import FAMILIES

    return {name: value for family in FAMILIES for name, value in family.fallback.items()
            if os.environ.get(name) == value}


# --- inside a Ray worker -----------------------------------------------------------------------------------


class RowWorker:
    """A Ray actor: the flows it loaded, by recipe key, and rows run through them with ``run_row``."""

    def __init__(self, proxy: str, environ: Mapping[str, str]) -> None:
        os.environ.update(environ)
        route_llm_calls(proxy)
        self._runners: dict[str, Runner] = {}

    def run(self, recipe: FlowRecipe, rows: list[RowWork], run_ids: Sequence[str], threads: int) -> list[Row]:
        try:
            runner = self._runner(recipe)
        except SpecError as error:  # the flow loaded in the session, but not here (a path this node lacks)
            return [_failed(work, str(error)) for work in rows]

        def one(pair: tuple[RowWork, str]) -> Row:
            with _row_id(pair[1]):
                return run_row(runner, pair[0])

        return Engine(threads).map(one, list(zip(rows, run_ids, strict=True)))

    def _runner(self, recipe: FlowRecipe) -> Runner:
        if recipe.key not in self._runners:
            for path in recipe.paths:
                if path not in sys.path:
                    sys.path.insert(0, path)
            target: FlowTarget = pickle.loads(recipe.target)
            self._runners[recipe.key] = target.executor(recipe.variants, recipe.overrides, recipe.connections,
                                                        recipe.init)
        return self._runners[recipe.key]


#: the proxy's run id of the row running: promptflow copies the context into its node threads
_ROW_ID: ContextVar[str] = ContextVar("pytest_promptflow_ray_row", default="")


@contextmanager
def _row_id(run_id: str) -> Iterator[None]:
    token = _ROW_ID.set(run_id)
    try:
        yield
    finally:
        _ROW_ID.reset(token)


def route_llm_calls(proxy: str) -> None:
    """Every request of httpx2/httpx (openai's clients) goes to the session's proxy, with the row and the node
    making it, so the session's call layer answers and counts it."""
    import importlib

    from ..workflows.worker import keep_direct

    keep_direct("127.0.0.1")
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        _patch(module, proxy.rstrip("/"))


def _patch(http: Any, proxy: str) -> None:
    sync_send, async_send = http.Client.send, http.AsyncClient.send

    def send(client: Any, request: Any, **kwargs: Any) -> Any:
        response = sync_send(client, forwarded(request, proxy), **kwargs)
        response.request = request
        return response

    async def send_async(client: Any, request: Any, **kwargs: Any) -> Any:
        response = await async_send(client, forwarded(request, proxy), **kwargs)
        response.request = request
        return response

    http.Client.send, http.AsyncClient.send = send, send_async


def forwarded(request: Any, proxy: str) -> Any:
    """``request`` sent to ``{proxy}/forward`` with its URL, row and node in headers (the proxy's own unchanged)."""
    from ..llm.calls import _node_name  # private to our call layer: the promptflow node running, if any
    from ..llm.proxy import NODE_HEADER, ROW_HEADER, URL_HEADER

    target = type(request.url)(f"{proxy}/forward")
    if (request.url.host, request.url.port) == (target.host, target.port):
        return request
    headers = request.headers.copy()
    headers["host"] = target.netloc.decode("ascii")
    headers[URL_HEADER] = str(request.url)
    headers[ROW_HEADER] = _ROW_ID.get()
    headers[NODE_HEADER] = _node_name() or ""
    return type(request)(request.method, target, headers=headers, stream=request.stream,
                         extensions=request.extensions)

