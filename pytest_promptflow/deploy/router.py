"""An endpoint's traffic splitter on 127.0.0.1: one URL in front of its deployments, as Azure ML has.

``python -m pytest_promptflow.deploy.router --state FILE --port-file FILE`` forwards ``POST /score`` to
the deployment named by the ``azureml-model-deployment`` header, or else to one drawn at random by the
traffic split in the endpoint's state file (re-read whenever it changes), and names the deployment that
answered in the same header. ``GET /stats`` counts requests, errors and latency per deployment.

A deployment whose process is gone is down. The split then goes to the deployments with traffic that are
up, in their proportions, as a user of A/B deployments expects the endpoint to keep answering; if none is up,
``/score`` answers 503 naming them. A pinned request goes where it is pinned, up or not. ``GET /health``
asks each deployment's own ``/health`` and answers 200 ``Healthy`` only when every deployment with traffic
answers; else 503 ``Degraded`` (another one takes its share) or ``Unhealthy`` (nothing serves), with
``down`` naming the ones that do not and ``deployments`` saying why, per deployment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping, Sequence

from pytest_promptflow.deploy.base import PIN_HEADER
from pytest_promptflow.deploy.processes import runs
from pytest_promptflow.deploy.serve import write_json
from pytest_promptflow.scrub import scrub_standard_streams

FORWARD_TIMEOUT = 300.0  # an LLM flow can take minutes
HEALTH_TIMEOUT = 5.0  # a deployment that does not answer its /health within this is down
SERVE = "pytest_promptflow.deploy.serve"
LATENCY_WINDOW = 10_000  # the p95 is over the last this many requests of a deployment

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Endpoint:
    """The state file as last read, and what was forwarded where (thread-safe)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._record: dict[str, Any] = {}
        self._counts: dict[str, dict[str, Any]] = {}

    def record(self) -> dict[str, Any]:
        """The endpoint state, re-read when the file changed (it is replaced whole, never edited)."""
        try:
            info = self.state.stat()
            seen = (info.st_mtime_ns, info.st_ino, info.st_size)
        except OSError:
            return {}
        with self._lock:
            if seen != self._seen:
                try:
                    self._record = json.loads(self.state.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    return self._record  # mid-replace on a platform without atomic rename: keep the old one
                self._seen = seen
            return self._record

    def choose(self, pinned: str | None) -> tuple[str, int] | tuple[int, str]:
        """(deployment, port) to forward to; else (status, error): 404 for an unknown pinned name, 503 for a
        pinned one still starting or when no deployment with traffic is up."""
        record = self.record()
        deployments = record.get("deployments") or {}
        known = f"deployments: {', '.join(sorted(deployments)) or 'none'}"
        if pinned is not None:
            if pinned not in deployments:
                return 404, f"no deployment {pinned!r}; {known}"
            port = deployments[pinned].get("port")
            return (pinned, port) if port else (503, f"deployment {pinned!r} is still starting; {known}")
        split = {name: share for name, share in (record.get("traffic") or {}).items()
                 if share > 0 and name in deployments}
        up = {name: share for name, share in split.items() if not gone(deployments[name])}
        if not split:
            return 503, f"no deployment has traffic; {known}"
        if not up:
            return 503, f"every deployment with traffic is down ({', '.join(sorted(split))}); {known}"
        name = random.choices(list(up), weights=list(up.values()))[0]
        return name, deployments[name]["port"]

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status, answer) of ``/health``: each deployment asked, 503 when one with traffic does not answer."""
        record = self.record()
        traffic = record.get("traffic") or {}
        deployments = {name: {"traffic": traffic.get(name, 0), **probe(entry)}
                       for name, entry in (record.get("deployments") or {}).items()}
        serving = [name for name, seen in deployments.items() if seen["traffic"] > 0]
        down = sorted(name for name, seen in deployments.items() if seen["status"] != "up")
        if serving and not set(serving) & set(down):
            return 200, {"status": "Healthy", "down": down, "deployments": deployments}
        status = "Degraded" if set(serving) - set(down) else "Unhealthy"
        return 503, {"status": status, "down": down, "deployments": deployments}

    def count(self, name: str, ok: bool, seconds: float) -> None:
        with self._lock:
            counts = self._counts.setdefault(name, {"requests": 0, "errors": 0, "total": 0.0,
                                                    "latencies": deque(maxlen=LATENCY_WINDOW)})
            counts["requests"] += 1
            counts["errors"] += not ok
            counts["total"] += seconds
            counts["latencies"].append(seconds)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            deployments = {name: {"requests": c["requests"], "errors": c["errors"],
                                  "latency_mean": c["total"] / c["requests"],
                                  "latency_p95": _p95(list(c["latencies"]))}
                           for name, c in self._counts.items()}
        return {"traffic": self.record().get("traffic") or {}, "deployments": deployments}


class Handler(BaseHTTPRequestHandler):
    server: Router

    def do_GET(self) -> None:
        if self.path == "/health":
            self._reply(*self.server.endpoint.health())
        elif self.path == "/stats":
            self._reply(200, self.server.endpoint.stats())
        else:
            self._reply(404, {"error": f"no {self.path} here: POST /score, GET /health or GET /stats"})

    def do_POST(self) -> None:
        if self.path != "/score":
            self._reply(404, {"error": f"no {self.path} here: POST /score"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        endpoint = self.server.endpoint
        chosen = endpoint.choose(self.headers.get(PIN_HEADER))
        if isinstance(chosen[0], int):
            self._reply(chosen[0], {"error": chosen[1]})
            return
        name, port = chosen
        request = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body, method="POST",
                                         headers={"Content-Type": self.headers.get("Content-Type")
                                                  or "application/json"})
        started = time.perf_counter()
        try:
            with _direct.open(request, timeout=FORWARD_TIMEOUT) as response:
                status, answer, kind = response.status, response.read(), response.headers.get("Content-Type")
        except urllib.error.HTTPError as error:
            status, answer, kind = error.code, error.read(), error.headers.get("Content-Type")
        except OSError as error:
            endpoint.count(name, False, time.perf_counter() - started)
            self._reply(502, {"error": f"deployment {name!r} did not answer: {error}"}, name)
            return
        endpoint.count(name, 200 <= status < 300, time.perf_counter() - started)
        self._send(status, answer, kind or "application/json", name)

    def _reply(self, status: int, record: Any, name: str = "") -> None:
        self._send(status, json.dumps(record).encode(), "application/json", name)

    def _send(self, status: int, body: bytes, kind: str, name: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        if name:
            self.send_header(PIN_HEADER, name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per request would grow the log without bound; /stats has the counts."""


class Router(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, endpoint: Endpoint, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), Handler)
        self.endpoint = endpoint


def gone(entry: Mapping[str, Any]) -> bool:
    """Whether a deployment's recorded process is no longer ours and alive (nothing to tell without a pid)."""
    return bool(entry.get("pid")) and not runs(entry["pid"], entry.get("server", SERVE), entry.get("folder", ""))


def probe(entry: Mapping[str, Any]) -> dict[str, str]:
    """{"status": "up"} if the deployment answers its /health now, else {"status": "down", "reason": why}."""
    if not entry.get("port"):
        return {"status": "down", "reason": "still starting"}
    if gone(entry):
        return {"status": "down", "reason": f"process {entry['pid']} is gone"}
    try:
        with _direct.open(f"http://127.0.0.1:{entry['port']}/health", timeout=HEALTH_TIMEOUT):
            return {"status": "up"}
    except urllib.error.HTTPError as error:
        return {"status": "down", "reason": f"its /health answered HTTP {error.code}"}
    except OSError as error:
        return {"status": "down", "reason": f"did not answer ({getattr(error, 'reason', error)})"}


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_promptflow.deploy.router", description=__doc__)
    parser.add_argument("--state", type=Path, required=True, help="the endpoint's state file (endpoint.json)")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write {pid, port} once listening")
    args = parser.parse_args(argv)
    scrub_standard_streams()
    router = Router(Endpoint(args.state))
    write_json(args.port_file, {"pid": os.getpid(), "port": router.server_address[1]})
    router.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
