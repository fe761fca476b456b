"""A real OpenAI-style chat-completions server on 127.0.0.1 that answers deterministically and fails
on request, so a test can predict exactly which LLM calls fail, how often, and which rows end as errors.

It serves ``/v1/chat/completions`` and ``/openai/deployments/<name>/chat/completions``. The answer to a
request is ``f"{prefix} {last user message}"`` (followed by the value of the request header ``echo_header``
when one is named: an endpoint that echoes the caller's key) with a ``usage`` block counting words (prompt: every
message, completion: the answer). Faults are chosen by a marker in the last user message:

- ``[always:KIND]``: every attempt fails that way (a permanent fault);
- ``[first:KIND,KIND,...]``: attempt n of that message gets the n-th fault, later attempts succeed.

KIND is ``500``, ``429`` (with ``Retry-After``), ``slow`` (no answer for ``slow_seconds``, past the
client's timeout), ``malformed`` (status 200 with a broken JSON body), ``nocompletion`` (status 200 with
a well-formed JSON body that is no completion: ``NO_COMPLETION``) or ``drop`` (the connection is closed
without a response). Messages without a marker fail with ``random_rate``, in one of ``random_faults``
(default: the transient ones), drawn from the seed, the message and the attempt number: the same
attempts fail whichever order threads send them in.

Every request is recorded (path, headers, body, attempt, fault), and the most requests in flight at
once is measured, so tests can assert attempt counts, credentials and limits.
"""

from __future__ import annotations

import json
import random
import re
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

FAULTS = ("500", "429", "slow", "malformed", "nocompletion", "drop")
TRANSIENT = ("500", "429", "drop")  # what random faults draw from
NO_COMPLETION = {"error": {"message": "upstream busy, try later", "code": "busy"}, "retry": True}
_PATH = re.compile(r"^/(?:v1|openai/deployments/(?P<deployment>[^/]+))/chat/completions$")
_MARKER = re.compile(r"\[(always|first):([a-z0-9,]+)\]")


@dataclass(frozen=True)
class Received:
    """One request as the endpoint saw it, and the fault it answered with (None: a good answer)."""

    path: str
    query: str
    headers: Mapping[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None when the body was not JSON
    message: str  # the last user message ("" when there is none)
    attempt: int  # 1 for the first request with this message
    fault: str | None


def last_user_message(body: Any) -> str:
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content: Any) -> str:
    """A message's text; content may be a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def words(text: str) -> int:
    return len(text.split())


def planned_faults(message: str) -> tuple[str, tuple[str, ...]] | None:
    """``("always"|"first", faults)`` from the message's marker, None when it has none."""
    found = _MARKER.search(message)
    if found is None:
        return None
    faults = tuple(found.group(2).split(","))
    unknown = [fault for fault in faults if fault not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault {unknown[0]!r} in {message!r}; use one of {', '.join(FAULTS)}")
    return found.group(1), faults


def attempts_needed(message: str) -> int:
    """How many requests a message with a ``first`` marker (or none) takes to get its answer."""
    planned = planned_faults(message)
    if planned is None:
        return 1
    kind, faults = planned
    if kind == "always":
        raise ValueError(f"{message!r} never gets an answer")
    return len(faults) + 1


@dataclass
class FaultEndpoint:
    """The server; use it as a context manager (``with FaultEndpoint() as endpoint:``)."""

    prefix: str = "echo:"
    echo_header: str | None = None  # a request header whose value every answer repeats, e.g. "api-key"
    random_rate: float = 0.0
    random_faults: tuple[str, ...] = TRANSIENT  # the kinds a random fault is drawn from
    seed: int = 0
    retry_after: str = "0"  # the Retry-After header of a 429
    slow_seconds: float = 30.0  # a slow answer's wait (cut short when the server stops)
    hold_until_in_flight: int | None = None  # hold answers until this many requests were in flight at once...
    hold_seconds: float = 0.0  # ...or this long has passed
    requests: list[Received] = field(default_factory=list)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        unknown = [fault for fault in self.random_faults if fault not in FAULTS]
        if unknown or not self.random_faults:
            raise ValueError(f"random_faults {self.random_faults!r}: use some of {', '.join(FAULTS)}")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._attempts: dict[str, int] = {}
        self._in_flight = 0
        self._answers: list[tuple[str, int, int]] = []  # (message, prompt, completion tokens) of good answers
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- what a test configures its client with --
    @property
    def url(self) -> str:
        assert self._server is not None, "the endpoint is not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    def answer(self, message: str, headers: Mapping[str, str] | None = None) -> str:
        echoed = (headers or {}).get(self.echo_header.lower(), "") if self.echo_header else ""
        return f"{self.prefix} {message}{f' {echoed}' if echoed else ''}"

    # -- what a test asserts on --
    def count(self, message: str | None = None) -> int:
        """Requests received (with this last user message, when given)."""
        with self._lock:
            return sum(1 for r in self.requests if message is None or r.message == message)

    def faults(self) -> list[str]:
        with self._lock:
            return [r.fault for r in self.requests if r.fault]

    @property
    def prompt_tokens(self) -> int:
        with self._lock:
            return sum(prompt for _, prompt, _ in self._answers)

    @property
    def completion_tokens(self) -> int:
        with self._lock:
            return sum(completion for _, _, completion in self._answers)

    def usage(self, message: str) -> tuple[int, int]:
        """(prompt, completion) tokens the answer to ``message`` reported; (0, 0) if it got none."""
        with self._lock:
            found = [(prompt, completion) for text, prompt, completion in self._answers if text == message]
        return found[-1] if found else (0, 0)

    def reset(self) -> None:
        """Forget what was received (attempt numbers start again at 1)."""
        with self._lock:
            self.requests.clear()
            self._attempts.clear()
            self._answers.clear()
            self.max_in_flight = 0

    # -- lifecycle --
    def start(self) -> FaultEndpoint:
        handler = type("Handler", (_Handler,), {"endpoint": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-endpoint",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving (called from the handler's threads) --
    def _receive(self, path: str, query: str, headers: Mapping[str, str], body: Any) -> Received:
        message = last_user_message(body)
        with self._changed:
            attempt = self._attempts[message] = self._attempts.get(message, 0) + 1
            received = Received(path, query, headers, body, message, attempt, self._fault(message, attempt))
            self.requests.append(received)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._changed.notify_all()
        return received

    def _fault(self, message: str, attempt: int) -> str | None:
        planned = planned_faults(message)
        if planned is not None:
            kind, faults = planned
            if kind == "always":
                return faults[(attempt - 1) % len(faults)]
            return faults[attempt - 1] if attempt <= len(faults) else None
        if self.random_rate and random.Random(f"{self.seed}|{message}|{attempt}").random() < self.random_rate:
            return random.Random(f"{self.seed}|{message}|{attempt}|kind").choice(self.random_faults)
        return None

    def _hold(self) -> None:
        """Waits (with the request counted in flight) until ``hold_until_in_flight`` requests have been
        in flight at once, so calls that may overlap surely do; once that happened nothing waits."""
        if not self.hold_seconds:
            return
        target = self.hold_until_in_flight
        with self._changed:
            self._changed.wait_for(
                lambda: self._stopping.is_set() or (target is not None and self.max_in_flight >= target),
                timeout=self.hold_seconds)

    def _done(self, answered: tuple[str, int, int] | None = None) -> None:
        """Leaves the in-flight count; called before the last byte is sent, so a client that has its
        answer never finds the endpoint still counting it."""
        with self._changed:
            self._in_flight -= 1
            if answered is not None:
                self._answers.append(answered)
            self._changed.notify_all()

    def _wait_slow(self) -> None:
        self._stopping.wait(self.slow_seconds)

    def _completion(self, body: Any, deployment: str | None,
                    received: Received) -> tuple[dict[str, Any], tuple[str, int, int]]:
        message = received.message
        answer = self.answer(message, received.headers)
        messages = body.get("messages") if isinstance(body, dict) else None
        prompt = sum(words(_text(m.get("content"))) for m in messages or [] if isinstance(m, dict))
        completion = words(answer)
        model = deployment or (body.get("model") if isinstance(body, dict) else None) or "unknown"
        return {
            "id": f"chatcmpl-{zlib.crc32(message.encode()):08x}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }, (message, prompt, completion)


class _Handler(BaseHTTPRequestHandler):
    endpoint: FaultEndpoint
    protocol_version = "HTTP/1.0"  # one request per connection: a dropped one never poisons a pool

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self._json(405, {"error": {"message": "POST chat completions here", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        matched = _PATH.match(path)
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        if matched is None:
            self._json(404, {"error": {"message": f"no such path {path}", "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        endpoint = self.endpoint
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            received = endpoint._receive(path, query, headers, body)
        except ValueError as error:  # a test's own mistake, e.g. an unknown fault in a marker
            self._json(400, {"error": {"message": str(error), "type": "invalid_request_error"}})
            return
        answered = None
        try:
            if received.fault == "slow":
                endpoint._wait_slow()
            else:
                endpoint._hold()
            if received.fault == "drop":
                endpoint._done()
                self.close_connection = True
                return  # nothing written: the client sees the connection close without a response
            if received.fault == "500":
                status, payload, extra = 500, b'{"error": {"message": "injected 500", "type": "server_error"}}', {}
            elif received.fault == "429":
                status, extra = 429, {"Retry-After": endpoint.retry_after}
                payload = b'{"error": {"message": "injected 429", "type": "rate_limit_error"}}'
            elif received.fault == "malformed":
                status, payload, extra = 200, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess', {}
            elif received.fault == "nocompletion":
                status, payload, extra = 200, json.dumps(NO_COMPLETION).encode(), {}
            else:
                completion, tokens = endpoint._completion(body, matched.group("deployment"), received)
                status, payload, extra = 200, json.dumps(completion).encode(), {}
                answered = None if received.fault == "slow" else tokens  # a slow answer comes too late
        except BaseException:
            endpoint._done()
            raise
        endpoint._done(answered)
        try:
            self._send(status, payload, extra)
        except OSError:  # the client gave up (a slow answer past its timeout)
            self.close_connection = True

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), {})

    def _send(self, status: int, payload: bytes, extra: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
