"""One workflow worker process, spoken to in JSON lines over its stdin and stdout.

Rows are sent from the engine's threads at once and answered by id in any order: a reader thread
hands each reply to the row waiting for it. A worker that dies gives its waiting rows a one-line
error; the next request starts a new one (and loads its workflows again). The worker leads its own
process group and ends on stdin EOF, so it never outlives the session.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping

from ..promptflow_log import record

WORKER = Path(__file__).with_name("worker.py")
STOP_SECONDS = 5.0
LOG_NAME = "workflow-worker"


class WorkerGone(Exception):
    """The worker exited (or could not be written to) before it answered."""


@dataclass
class _Reply:
    """A request waiting for its answer."""

    done: threading.Event = field(default_factory=threading.Event)
    message: Mapping[str, Any] | None = None


class _Process:
    """One started worker: its pipes, what it has loaded, the requests waiting on it."""

    def __init__(self, python: str, environ: Mapping[str, str], cwd: Path) -> None:
        self.python = python
        self.popen = subprocess.Popen(
            [python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(environ), cwd=cwd, start_new_session=True, text=True, encoding="utf-8", bufsize=1)
        self.loaded: dict[str, Mapping[str, Any]] = {}  # handle -> its load reply
        self.waiting: dict[str, _Reply] = {}
        self.stderr: collections.deque[str] = collections.deque(maxlen=20)
        self.lock = threading.Lock()  # guards waiting and gone
        # one line at a time on stdin; apart from ``lock``, so the reader never waits on a blocked write
        self.writing = threading.Lock()
        self.loading = threading.Lock()  # one load at a time: rows of one workflow wait for its first load
        self.gone = ""  # why it stopped answering, once it did
        for target, stream in ((self._read, self.popen.stdout), (self._drain, self.popen.stderr)):
            threading.Thread(target=target, args=(stream,), name="promptflow-workflow-worker", daemon=True).start()

    def ask(self, key: str, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """Sends ``request`` and waits for the reply keyed ``key``."""
        reply = _Reply()
        with self.lock:
            if self.gone:
                raise WorkerGone(self.gone)
            self.waiting[key] = reply
        try:
            with self.writing:
                assert self.popen.stdin is not None
                self.popen.stdin.write(json.dumps(request) + "\n")
                self.popen.stdin.flush()
        except (OSError, ValueError):
            with self.lock:
                self.waiting.pop(key, None)
            raise WorkerGone(self._why_gone()) from None
        reply.done.wait()
        if reply.message is None:
            raise WorkerGone(self.gone)
        return reply.message

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                record(LOG_NAME, f"not a protocol line: {line.rstrip()[:200]}", logging.WARNING)
                continue
            key = str(message["id"]) if "id" in message else f"load:{message.get('handle')}"
            with self.lock:
                reply = self.waiting.pop(key, None)
            if reply is not None:
                reply.message = message
                reply.done.set()
        self._end()

    def _drain(self, stream: IO[str]) -> None:
        """The worker's stderr (the workflow's prints, its warnings): to the session's log file, the last lines
        kept for the error of a worker that dies."""
        for line in stream:
            self.stderr.append(line.rstrip())
            record(LOG_NAME, line.rstrip())

    def _end(self) -> None:
        """stdout closed: every waiting request is answered with why."""
        with self.lock:
            self.gone = self._why_gone()
            waiting, self.waiting = self.waiting, {}
        for reply in waiting.values():
            reply.done.set()

    def _why_gone(self) -> str:
        try:
            code = self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        last = next((line for line in reversed(self.stderr) if line.strip()), "")
        said = f"; its last line: {last[:300]}" if last else ""
        return f"the workflow worker ({self.python}) exited with code {code} before answering{said}"

    @property
    def alive(self) -> bool:
        return not self.gone and self.popen.poll() is None

    def stop(self) -> None:
        """Asks it to exit, closes its stdin (EOF ends it too), then ends its process group if it lingers."""
        try:
            with self.writing:
                assert self.popen.stdin is not None
                self.popen.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.popen.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.popen.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _kill_group(self.popen.pid)
            self.popen.wait()


def _kill_group(pid: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


class WorkerClient:
    """The session's worker for one Python: started on first use, restarted after it died."""

    def __init__(self, python: str, environ: Mapping[str, str], cwd: Path) -> None:
        self.python = python
        self.environ = dict(environ)
        self.cwd = cwd
        self._process: _Process | None = None
        self._handles: dict[tuple[str, str], str] = {}  # (module path, factory) -> handle
        self._lock = threading.Lock()

    def load(self, path: Path, factory: str) -> Mapping[str, Any]:
        """The worker's load reply for the workflow: its ``input`` (how rows map), or its one-line ``error``."""
        return self._load(self._running(), path, factory)[1]

    def run(self, path: Path, factory: str, run_id: str, args: Mapping[str, Any], inputs: Mapping[str, Any],
            output: str | None = None) -> Mapping[str, Any]:
        """One run of a fresh workflow: the worker's reply (``outputs``, or ``error_type`` and ``error_message``)."""
        process = self._running()
        handle, loaded = self._load(process, path, factory)
        if "error" in loaded:
            return {"error_type": "WorkflowLoadError", "error_message": str(loaded["error"])}
        request = {"op": "run", "id": run_id, "handle": handle, "args": dict(args), "inputs": dict(inputs),
                   "output": output}
        return process.ask(run_id, request)

    def _load(self, process: _Process, path: Path, factory: str) -> tuple[str, Mapping[str, Any]]:
        """The workflow's handle, loaded once per process (a failed load is asked again next time)."""
        with self._lock:
            handle = self._handles.setdefault((str(path), factory), f"w{len(self._handles) + 1}")
        with process.loading:
            if handle not in process.loaded:
                reply = process.ask(f"load:{handle}", {"op": "load", "handle": handle, "path": str(path),
                                                       "factory": factory})
                if "error" in reply:
                    return handle, reply
                process.loaded[handle] = reply
        return handle, process.loaded[handle]

    def start(self) -> None:
        """Starts the worker now (its first request would), so its start overlaps other work."""
        self._running()

    def _running(self) -> _Process:
        with self._lock:
            if self._process is None or not self._process.alive:
                self._process = _Process(self.python, self.environ, self.cwd)
            return self._process

    def stop(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            process.stop()
