"""The one layer every LLM call of a flow or an evaluator goes through: store, retries, limits, counts.

It sits in the HTTP client's ``send`` (see ``intercept``), so it sees each request the OpenAI SDK
(and so promptflow's LLM tool, prompty and azure-ai-evaluation) makes, whatever built the client.
Only POSTs to ``.../chat/completions``, ``.../completions``, ``.../embeddings`` and ``.../responses``
(the Responses API: OpenAI's ``/v1/responses``, Azure's ``/openai/responses`` and
``/openai/deployments/<d>/responses``) are handled; everything else passes through untouched. A
streamed answer is read whole, stored as its event-stream text and replayed as such.

When retries run out, or replay finds no stored answer, the call raises an ``openai.OpenAIError``
subclass: the SDK passes those on without its own retries and promptflow's LLM tool treats them as
final, so a failed row costs our retries only. The row becomes an error row; the run goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import openai

from ..scrub import remember_secrets
from . import ledger, shapes, transcript
from .accounting import cost, usage_of
from .limits import Gate
from .nearest import StoreIndex
from .retry import retry_after, should_retry
from .settings import LLMSettings
from .store import Answer, CallRequest, Store

_ENDPOINT = re.compile(r"/(chat/completions|completions|embeddings|responses)/?$")
_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")
_SECRET_HEADERS = ("api-key", "authorization", "ocp-apim-subscription-key", "x-api-key")
CACHE_HEADER = "x-pytest-promptflow-cache"
_FLEX_STAND_IN = "Flex"  # promptflow's private ScriptExecutor names a flex flow's line context so
#: the node a call comes from when no promptflow node runs here: a workflow's executor, named by the proxy
_node: contextvars.ContextVar[str | None] = contextvars.ContextVar("pytest_promptflow_llm_node", default=None)


class LLMCallFailed(openai.OpenAIError):
    """An LLM call that still failed after every retry."""


class ReplayMiss(openai.OpenAIError):
    """Replay mode met a request that has no stored answer."""


class UnusableAnswer(openai.OpenAIError):
    """An endpoint answered HTTP 200 with a body that is no answer of its kind (not stored)."""


@dataclass(frozen=True)
class Call:
    """An intercepted request: its content, the connection it counts against, where it came from."""

    request: CallRequest
    connection: str
    url: str  # without query string: may be shown

    def where(self) -> str:
        node = _node_name()
        return f"{ledger.current().site}{f', node {node}' if node else ''}"


class CallLayer:
    """Answers intercepted LLM requests from the store or the model, within the connection's limits."""

    def __init__(self, settings: LLMSettings, workers: int = 1) -> None:
        self.settings = settings
        self.store = Store(settings.store)
        self.index = StoreIndex(settings.store)  # read on the first replay miss, to name the nearest request
        self.workers = workers
        self._endpoints: dict[str, tuple[str, str]] = {}  # base URL -> (provider, connection name)
        self._routes: dict[str, Callable[[], str]] = {}  # base URL -> where its requests really go
        self._gates: dict[str, Gate] = {}
        self._lock = threading.Lock()
        self._started = time.time()  # record mode: entries written since were recorded by this run
        self.tally: collections.Counter[str] = collections.Counter()  # "from store", "live", "failed", ...

    def register(self, base_url: str, connection: str, provider: str | None = None) -> None:
        """Requests under ``base_url`` count against ``connection`` and are keyed by ``provider``
        (default: the URL's scheme and host, so a local server's changing port can be named instead)."""
        base = base_url.rstrip("/")
        with self._lock:
            self._endpoints[base] = (provider or _origin(base), connection)

    def route(self, base_url: str, resolve: Callable[[], str]) -> None:
        """Requests under ``base_url`` are sent under the address ``resolve()`` gives instead, asked for
        only when one must be sent: a model behind it starts only if called, never for a stored answer."""
        with self._lock:
            self._routes[base_url.rstrip("/")] = resolve

    # -- the two entry points, one per client kind --
    def send(self, http: ModuleType, original: Callable[..., Any], client: Any, request: Any, **kwargs: Any) -> Any:
        call = self._describe(request)
        if call is None:
            self._reroute(http, request)
            return original(client, request, **kwargs)
        stored = self._stored(http, call, request)
        if stored is not None:
            return stored
        self._reroute(http, request)
        _set_timeout(request, self.settings.retry.timeout)
        failure, wait = "", None
        for attempt in range(self.settings.retry.attempts):
            if attempt:
                time.sleep(self.settings.retry.delay(attempt - 1, wait))
            with self._gate(call.connection).slot():
                try:
                    started = time.perf_counter()
                    response = original(client, request, **kwargs)
                    response.read()
                    latency = time.perf_counter() - started
                except _transient(http) as exc:
                    failure, wait = _describe_exception(exc), None
                    continue
            if not should_retry(response.status_code):
                return self._answered(call, response, latency)
            failure, wait = f"HTTP {response.status_code}", retry_after(response.headers)
            response.close()
        raise self._gave_up(call, failure)

    async def send_async(self, http: ModuleType, original: Callable[..., Any], client: Any, request: Any,
                         **kwargs: Any) -> Any:
        call = self._describe(request)
        if call is None:
            self._reroute(http, request)
            return await original(client, request, **kwargs)
        stored = self._stored(http, call, request)
        if stored is not None:
            return stored
        self._reroute(http, request)  # may start the model: blocks this event loop once
        _set_timeout(request, self.settings.retry.timeout)
        failure, wait = "", None
        for attempt in range(self.settings.retry.attempts):
            if attempt:
                await asyncio.sleep(self.settings.retry.delay(attempt - 1, wait))
            async with self._gate(call.connection).async_slot():
                try:
                    started = time.perf_counter()
                    response = await original(client, request, **kwargs)
                    await response.aread()
                    latency = time.perf_counter() - started
                except _transient(http) as exc:
                    failure, wait = _describe_exception(exc), None
                    continue
            if not should_retry(response.status_code):
                return self._answered(call, response, latency)
            failure, wait = f"HTTP {response.status_code}", retry_after(response.headers)
            await response.aclose()
        raise self._gave_up(call, failure)

    # -- the steps both share --
    def _describe(self, request: Any) -> Call | None:
        path = request.url.path
        if request.method != "POST" or not _ENDPOINT.search(path):
            return None
        try:
            body = json.loads(request.content or b"null")
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict):
            return None
        url = str(request.url.copy_with(query=None))
        provider, connection = self._endpoint(url)
        deployment = _DEPLOYMENT.search(path)
        model = deployment.group(1) if deployment else str(body.get("model", ""))
        kind = _ENDPOINT.search(path).group(1)  # type: ignore[union-attr]
        content = CallRequest(provider, kind, model, request.url.params.get("api-version"), body,
                              ledger.current().repeat)  # a row's repeat has answers of its own
        remember_secrets(*_secrets(request))  # a credential sent is a secret no written file may contain
        return Call(content, connection, url)

    def _endpoint(self, url: str) -> tuple[str, str]:
        with self._lock:
            matches = [base for base in self._endpoints if url.startswith(base + "/")]
            if matches:
                return self._endpoints[max(matches, key=len)]
        origin = _origin(url)
        return origin, urlsplit(origin).netloc

    def _reroute(self, http: ModuleType, request: Any) -> None:
        """Points a request under a ``route``d base URL at the address that route resolves to."""
        url = str(request.url)
        with self._lock:
            base = max((b for b in self._routes if url.startswith(b + "/")), key=len, default=None)
            resolve = self._routes[base] if base is not None else None
        if base is None or resolve is None:
            return
        request.url = http.URL(resolve().rstrip("/") + url[len(base):])
        request.headers["Host"] = request.url.netloc.decode("ascii")

    def _gate(self, connection: str) -> Gate:
        with self._lock:
            if connection not in self._gates:
                self._gates[connection] = Gate(self.settings.limit(connection).share(self.workers))
            return self._gates[connection]

    def _stored(self, http: ModuleType, call: Call, request: Any) -> Any:
        """The stored answer as a response (counted as a cache hit), None to call the model.

        Record mode asks the model once per request per run: a second identical request (another cell,
        another xdist worker) gets the answer this run recorded, so replaying the store gives back the
        answers the recorded run's verdicts were made of (two identical requests in flight at once
        can still both be asked)."""
        if self.settings.mode == "record":
            answer = self.store.get(call.request, written_since=self._started)
        elif self.settings.mode in ("cache", "replay"):
            answer = self.store.get(call.request)
        else:
            return None
        unusable = shapes.problem(call.request.kind, answer.body) if answer is not None else None
        if answer is None or unusable:
            if self.settings.mode == "replay":
                asked = f"{call.request.kind} of {call.request.model!r}"
                reason = (f"{call.where()}: no usable recorded answer for {asked}: {self.store.path(call.request)} "
                          f"has {unusable}; not replayed" if unusable
                          else f"{call.where()}: no recorded answer for {asked} in {self.store.root}"
                          + self._nearest(call))
                ledger.current().missed(reason)
                line = reason.split("\n")[0]  # the row's error and its transcript: one line, without the diff
                _transcribe_failure(call, line)
                self._add("missing from store")
                raise ReplayMiss(line)
            return None
        self._count(call, answer.body, cached=True)
        self._add("from store")
        headers = {"content-type": answer.content_type, CACHE_HEADER: "hit"}
        return http.Response(answer.status, headers=headers, content=answer.content(), request=request)

    def _nearest(self, call: Call) -> str:
        """``; nearest recorded ...: <file>, differs in the prompt`` and the prompt's diff on the lines after."""
        nearest = self.index.nearest(call.request, **_recorded_by())
        return "" if nearest is None else "; " + "\n".join([nearest.line(self.store.root), *nearest.diff])

    def _answered(self, call: Call, response: Any, latency: float) -> Any:
        """Counts a live response and stores it when it is a whole, successful answer."""
        content_type = response.headers.get("content-type", "")
        if not response.is_success:
            ledger.current().failed(f"HTTP {response.status_code}")
            _transcribe_failure(call, transcript.http_error(response.status_code, _json_or_none(response)))
            self._add("failed")
            response.headers["x-should-retry"] = "false"  # final: the SDK must not retry on top of us
            return response
        try:
            body: Any = response.json() if "json" in content_type else response.text
        except ValueError:
            raise self._unusable(call, response, "a body that is not JSON") from None
        unusable = shapes.problem(call.request.kind, body)
        if unusable:
            raise self._unusable(call, response, unusable)
        self._count(call, body, cached=False, latency=latency)
        self._add("live")
        if self.settings.mode != "live":
            self.store.put(call.request, Answer(response.status_code, content_type, body),
                           forbidden=_secrets(response.request), recorded_by=_recorded_by())
        return response

    def _count(self, call: Call, body: Any, *, cached: bool, latency: float | None = None) -> None:
        """Counts an answer against the row and adds it to the row's transcript."""
        usage = usage_of(body)
        reported = body.get("model") if isinstance(body, dict) else None
        models = (call.request.model, *([reported] if isinstance(reported, str) else []))
        spent = cost(self.settings.prices, models, usage)
        ledger.current().answered(cached=cached, prompt_tokens=usage.prompt_tokens,
                                  completion_tokens=usage.completion_tokens, cost=spent)
        asked = call.request
        ledger.current().keep(transcript.answered(
            asked.kind, asked.model, asked.body, _node_name(), body, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost=spent, latency=latency, from_store=cached))

    def _unusable(self, call: Call, response: Any, problem: str) -> UnusableAnswer:
        """A successful status with a body that is no answer: the row fails in one line, nothing is stored."""
        reason = (f"LLM endpoint {call.connection} answered HTTP {response.status_code} with {problem}; "
                  "not stored")
        ledger.current().failed(reason)
        _transcribe_failure(call, reason)
        self._add("failed")  # its body was read whole, which closed it
        return UnusableAnswer(reason)

    def _gave_up(self, call: Call, failure: str) -> LLMCallFailed:
        attempts = self.settings.retry.attempts
        reason = f"{call.url}: gave up after {attempts} attempt{'s' * (attempts > 1)}, last: {failure}"
        ledger.current().failed(reason)
        _transcribe_failure(call, reason)
        self._add("failed")
        return LLMCallFailed(reason)

    def _add(self, outcome: str) -> None:
        with self._lock:
            self.tally[outcome] += 1


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


def _transient(http: ModuleType) -> tuple[type[BaseException], ...]:
    return (http.TimeoutException, http.NetworkError, http.RemoteProtocolError)


def _describe_exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}{f': {exc}' if str(exc) else ''}"


def _transcribe_failure(call: Call, reason: str) -> None:
    """Adds a call that got no answer to the row's transcript, with the one-line reason."""
    asked = call.request
    ledger.current().keep(transcript.failed(asked.kind, asked.model, asked.body, _node_name(), reason))


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _set_timeout(request: Any, seconds: float) -> None:
    request.extensions["timeout"] = {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}


def _secrets(request: Any) -> tuple[str, ...]:
    """The credential values a request carries, which must never reach the store."""
    values = (request.headers.get(name, "").removeprefix("Bearer ").strip() for name in _SECRET_HEADERS)
    return tuple(v for v in values if len(v) >= 4)  # a shorter one is no secret, and would match any text


def _recorded_by() -> dict[str, str | None]:
    """The flow (or evaluator) and node making the call: ``{"flow": "sentiment", "node": "classify"}``."""
    site = ledger.current().site  # "flow sentiment, row 3 of dataset d", "evaluator acc, row 3 ..."
    who = site.split(", ")[0]
    flow = who.removeprefix("flow ").removeprefix("evaluator ") if who.startswith(("flow ", "evaluator ")) else None
    return {"flow": flow, "node": _node_name()}


@contextmanager
def as_node(name: str | None) -> Iterator[None]:
    """Calls made inside come from node ``name`` (a workflow executor's id, which the worker names)."""
    token = _node.set(name or None)
    try:
        yield
    finally:
        _node.reset(token)


def _node_name() -> str | None:
    """The node making the call: one named by ``as_node``, else the promptflow node running, if a DAG node
    is. promptflow has no public way to ask; while a node runs, ``sys.stdout`` is its NodeLogWriter, whose
    context names the node (a flex flow's whole line runs as the stand-in node ``Flex``, which is none)."""
    named = _node.get()
    if named:
        return named
    context = getattr(sys.stdout, "_context", None)
    info = context.get() if isinstance(context, contextvars.ContextVar) else None
    name = getattr(info, "node_name", None)
    return None if name == _FLEX_STAND_IN else name
