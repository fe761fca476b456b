"""The local proxy through which a workflow worker's HTTP requests reach the session's call layer.

A worker in another environment cannot share our process, so it sends each request to
``POST <proxy>/forward`` with the original address in ``X-Pytest-Promptflow-Url``, the run it belongs
to in ``X-Pytest-Promptflow-Row`` and the executor making it in ``X-Pytest-Promptflow-Node``. Here the
request is rebuilt and sent with an httpx2 client of this process, so the call layer (store, replay,
limits, retries, embedded-model routing, accounting, transcripts) treats it exactly as an in-process
SDK call, counted against the row waiting on that run. Listens on 127.0.0.1 only, and only under a
path of the session's own (``/<token>/forward``, a random token the worker gets in its proxy address),
so no other local process can send through the session's credentials.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from . import ledger

PREFIX = "x-pytest-promptflow-"
URL_HEADER, ROW_HEADER, NODE_HEADER = (f"{PREFIX}{name}" for name in ("url", "row", "node"))
#: not passed on either way: they describe one connection, not the message
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "host", "content-length"})
LOOPBACK = "127.0.0.1"
SHUTDOWN_POLL = 0.05  # seconds: how long stopping waits for the server loop (the default 0.5 s ends every session)


class LLMProxy:
    """An HTTP server on 127.0.0.1 that forwards a worker's requests, each inside its row's ledger scope."""

    def __init__(self) -> None:
        self._rows: dict[str, ledger.RowCalls] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._client: Any = None
        self.forward_path = f"/{secrets.token_urlsafe(16)}/forward"

    @property
    def address(self) -> str:
        """``http://127.0.0.1:PORT/<token>``, which the worker sends to at ``/forward``; starts the server on
        first use."""
        with self._lock:
            if self._server is None:
                self._server = _Server((LOOPBACK, 0), _Handler, self)
                serve = functools.partial(self._server.serve_forever, poll_interval=SHUTDOWN_POLL)
                threading.Thread(target=serve, name="promptflow-llm-proxy", daemon=True).start()
            return f"http://{LOOPBACK}:{self._server.server_address[1]}{self.forward_path.removesuffix('/forward')}"

    @contextmanager
    def row(self, run_id: str, calls: ledger.RowCalls) -> Iterator[None]:
        """While inside, requests of run ``run_id`` count against ``calls`` (the waiting row's)."""
        with self._lock:
            self._rows[run_id] = calls
        try:
            yield
        finally:
            with self._lock:
                self._rows.pop(run_id, None)

    def calls_of(self, run_id: str) -> ledger.RowCalls:
        with self._lock:
            found = self._rows.get(run_id)
        return found or ledger.RowCalls(f"workflow run {run_id or '?'}, no longer waited for")

    def send(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> Any:
        """The request sent through this process's (patched) httpx2 client; its response, read whole."""
        import httpx2

        with self._lock:
            if self._client is None:
                self._client = httpx2.Client(timeout=None)
            client = self._client
        return client.send(client.build_request(method, url, headers=headers, content=body))

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            client, self._client = self._client, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if client is not None:
            client.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], proxy: LLMProxy) -> None:
        super().__init__(address, handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._forward()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

    def _forward(self) -> None:
        proxy = self.server.proxy
        if self.client_address[0] != LOOPBACK or self.path != proxy.forward_path or not self.headers.get(URL_HEADER):
            self._reply(404, [("content-type", "text/plain")], b"not a forwarded request\n")
            return
        body = self._body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and not
                   k.lower().startswith(PREFIX)]
        from .calls import as_node

        with ledger.enter(proxy.calls_of(self.headers.get(ROW_HEADER, ""))), as_node(self.headers.get(NODE_HEADER)):
            try:
                response = proxy.send(self.command, self.headers[URL_HEADER], headers, body)
            except Exception as exc:  # the call layer's final answer (replay miss, gave up) or a network error
                self._refused(exc)
                return
        try:
            content = response.read()
        finally:
            response.close()
        kept = [(k, v) for k, v in response.headers.multi_items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"]  # content is decoded
        self._reply(response.status_code, kept, content)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _refused(self, exc: Exception) -> None:
        """A final failure, as an answer the SDK gives up on at once; the message says why in one line."""
        message = str(exc).split("\n")[0] or type(exc).__name__
        body = json.dumps({"error": {"message": message, "type": type(exc).__name__, "code": "pytest_promptflow"}})
        self._reply(502, [("content-type", "application/json"), ("x-should-retry", "false")], body.encode())

    def _reply(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        """Quiet: the call layer counts and transcribes what matters."""
