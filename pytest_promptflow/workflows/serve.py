"""One deployment's process for an agent-framework workflow: the HTTP API of promptflow's serving app, on 127.0.0.1.

``<second env python> serve.py --flow-dir DIR --port-file FILE`` serves the packaged workflow in DIR (its
``flow.maf.json`` names the module, the factory and the factory's arguments), writes ``{"pid", "port"}`` to
FILE once it listens, and answers ``POST /score`` (inputs in, outputs out, a fresh workflow per request) and
``GET /health`` until it is killed. Standalone: stdlib and agent_framework only (never pytest_promptflow or
promptflow, which cannot share its environment).

Its LLM calls go where the environment's ``OPENAI_BASE_URL`` says. When the deployer found no model for it,
``PYTEST_PROMPTFLOW_MODEL`` says how to reach the embedded one: ``OPENAI_BASE_URL`` then points at this
server's ``/model/v1``, which asks for the machine's shared model at the first call a workflow makes (a
workflow that makes none never does) under a lease of this process, and forwards to it; the lease lapses
with this process, as a promptflow deployment's does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Sequence

from worker import leave_own_folder, load_factory, run_once  # beside this script, first on sys.path

leave_own_folder()  # the package's modules beside it must not shadow a module a workflow imports

MANIFEST = "flow.maf.json"
MODEL_VARIABLE = "PYTEST_PROMPTFLOW_MODEL"
REQUEST_TIMEOUT = 300.0
MODEL_PATH = "/model"
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, whatever HTTP_PROXY says


class Workflow:
    """The packaged workflow: a fresh one per request, all run on one event loop in its own thread."""

    def __init__(self, folder: Path) -> None:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        self.factory: Callable[..., Any] = load_factory(folder / manifest["module"], manifest["factory"])
        self.args: dict[str, Any] = dict(manifest.get("args") or {})
        self.output: str | None = manifest.get("output")
        self.model = EmbeddedModel(os.environ.get(MODEL_VARIABLE))
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="workflow-loop").start()

    def score(self, inputs: dict[str, Any]) -> dict[str, Any]:
        running = run_once(self.factory, self.args, inputs, self.output)
        return asyncio.run_coroutine_threadsafe(running, self.loop).result(REQUEST_TIMEOUT)


class EmbeddedModel:
    """The embedded model, asked for on first use if the deployer said how (the machine's shared one, under a
    lease of this process that lapses with it)."""

    def __init__(self, spec: str | None) -> None:
        self.spec = json.loads(spec) if spec else None
        self.lock = threading.Lock()
        self.started = ""  # its address once started

    def address(self) -> str:
        with self.lock:
            if not self.started:
                self.started = self._start()
            return self.started

    def _start(self) -> str:
        assert self.spec is not None, "no embedded model to start"
        command = [*self.spec["command"], "--owner-pid", str(os.getpid())]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   env={**os.environ, **self.spec.get("env", {})})
        assert process.stdout is not None
        for line in process.stdout:  # its one JSON line once ready: {"address": ..., "pid": ...}
            if line.startswith(b"{") and b"address" in line:
                return str(json.loads(line)["address"])
        raise RuntimeError(f"the embedded model exited with code {process.wait()} before it was ready")


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(200, {"status": "Healthy"})
        else:
            self._reply(404, _error("NotFound", f"no {self.path} here: POST /score or GET /health"))

    def do_POST(self) -> None:
        if self.path.startswith(f"{MODEL_PATH}/") and self.server.workflow.model.spec is not None:
            self._forward(self.path.removeprefix(MODEL_PATH))
            return
        if self.path != "/score":
            self._reply(404, _error("NotFound", f"no {self.path} here: POST /score"))
            return
        try:
            inputs = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError as error:
            self._reply(400, _error("UserError", f"the request is not JSON: {error}"))
            return
        if not isinstance(inputs, dict):
            self._reply(400, _error("UserError", "the request is not a JSON object of inputs"))
            return
        try:
            self._reply(200, self.server.workflow.score(inputs))
        except Exception as error:  # the workflow's own failure: promptflow answers a flow's error with 400
            traceback.print_exc()
            self._reply(400, _error("UserError", f"{type(error).__name__}: {error}"))

    def _forward(self, path: str) -> None:
        """A workflow's LLM call, sent on to the embedded model (started now if it is not yet)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            url = self.server.workflow.model.address() + path
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            with _direct.open(urllib.request.Request(url, body, headers), timeout=REQUEST_TIMEOUT) as response:
                status, answer, kind = response.status, response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            status, answer, kind = error.code, error.read(), error.headers.get("Content-Type", "")
        except (OSError, RuntimeError) as error:
            traceback.print_exc()
            self._reply(502, _error("ModelUnavailable", f"the embedded model did not answer: {error}"))
            return
        self._send(status, answer, kind or "application/json")

    def _reply(self, status: int, record: Any) -> None:
        self._send(status, json.dumps(record, default=str).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet, as waitress is
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, workflow: Workflow, host: str) -> None:
        super().__init__((host, 0), Handler)
        self.workflow = workflow


def _error(code: str, message: str) -> dict[str, Any]:
    """An error answer shaped as promptflow's serving app shapes one."""
    return {"error": {"code": code, "message": message}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve.py", description=__doc__)
    parser.add_argument("--flow-dir", type=Path, required=True, help="the packaged workflow folder")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write {pid, port} once listening")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    port_file, folder = args.port_file.resolve(), args.flow_dir.resolve()
    os.chdir(folder)  # a workflow opens files relative to its folder, as a promptflow deployment does
    try:
        server = Server(Workflow(folder), args.host)
    except Exception as error:  # the last log line says why, for the deployer's error message
        traceback.print_exc()
        print(f"cannot serve {args.flow_dir}: {type(error).__name__}: {' '.join(str(error).split())[:500]}",
              file=sys.stderr)
        return 1
    port = server.server_address[1]
    if server.workflow.model.spec is not None:
        os.environ["OPENAI_BASE_URL"] = f"http://127.0.0.1:{port}{MODEL_PATH}/v1"
    _write_json(port_file, {"pid": os.getpid(), "port": port})
    server.serve_forever()
    return 0


def _write_json(path: Path, record: Any) -> None:
    """Written atomically: the deployer sees no file or the whole of it."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        json.dump(record, file)
    os.replace(file.name, path)


if __name__ == "__main__":
    sys.exit(main())
