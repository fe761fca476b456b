"""Runs agent-framework workflows for a pytest-promptflow session, inside the workflows' own environment.

A standalone script: stdlib and agent_framework only, never pytest_promptflow or promptflow (promptflow and
agent-framework cannot share an environment). Started as ``<workflow python> worker.py``, it reads JSON lines
on stdin (``load`` a factory, ``run`` a row, ``exit``) and answers one JSON line each on the real stdout; rows
run concurrently, each on a fresh workflow. A serving script imports ``load_factory`` and ``run_once`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import sys
import threading
import traceback
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

PROXY_ENV = "PYTEST_PROMPTFLOW_PROXY"
URL_HEADER = "X-Pytest-Promptflow-Url"
ROW_HEADER = "X-Pytest-Promptflow-Row"
NODE_HEADER = "X-Pytest-Promptflow-Node"
SCALARS = (str, int, float, bool)
NO_OUTPUT = "the workflow yielded no output; fix: call ctx.yield_output(...) in its last executor"

ROW: contextvars.ContextVar[str] = contextvars.ContextVar("pytest_promptflow_row", default="")
NODE: contextvars.ContextVar[str] = contextvars.ContextVar("pytest_promptflow_node", default="")
_module_numbers = itertools.count(1)


class WorkflowError(Exception):
    """A problem of a workflow or of a row's inputs, said in one line with its fix (never a traceback)."""


# --- loading a factory ---------------------------------------------------------------------------------


def load_factory(path: str | Path, factory: str = "create_workflow") -> Callable[..., Any]:
    """The factory ``factory`` of the module file ``path``; a WorkflowError naming the file (and line) if the
    file is missing, does not import, or has no callable of that name."""
    file = Path(path).resolve()
    if not file.is_file():
        raise WorkflowError(f"{shown(file)}: no such workflow file; fix: correct the path after 'maf:' "
                            "(it is relative to the project root)")
    module = import_file(file)
    if not hasattr(module, factory):
        raise WorkflowError(f"{shown(file)}: has no {factory}; fix: define it or name the factory after the "
                            "second colon")
    found = getattr(module, factory)
    if not callable(found):
        raise WorkflowError(f"{shown(file)}: {factory} is a {type(found).__name__}, not callable; fix: make it "
                            "a function that builds and returns the Workflow")
    return typing.cast(Callable[..., Any], found)


def import_file(file: Path) -> types.ModuleType:
    """Imports ``file`` under a name of its own (two flows may both be ``workflow.py``) with its folder first on
    sys.path, so its sibling modules import as they would beside it."""
    folder = str(file.parent)
    if sys.path[:1] != [folder]:
        sys.path.insert(0, folder)
    name = f"_pytest_promptflow_workflow_{next(_module_numbers)}_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None  # a .py path always has a source loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pydantic look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise WorkflowError(f"{shown(file, user_line(exc, file))}: {type(exc).__name__}: {one_line(exc)}; "
                            f"fix: {import_fix(exc)}") from None
    return module


def import_fix(exc: BaseException) -> str:
    """What to do about a module that does not import in the workflow environment."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"install {exc.name} into the workflow environment ({sys.executable}) or correct the import"
    return f"make the module import without error (it runs with {sys.executable})"


def describe_input(factory: Callable[..., Any], path: str | Path) -> dict[str, Any]:
    """What the start executor of a workflow built with the factory's defaults takes: ``{"kind": "scalar" |
    "dict" | "fields", "type": name, "fields": [...]}``. A factory that cannot build fails here, once, naming
    the line of ``path`` it failed at, rather than on every row."""
    file = Path(path).resolve()
    name = getattr(factory, "__name__", "the factory")
    try:
        workflow = factory()
        input_type = start_input_type(workflow)
    except WorkflowError as exc:
        raise WorkflowError(f"{shown(file)}: {exc}") from None
    except Exception as exc:
        raise WorkflowError(f"{shown(file, user_line(exc, file))}: building the workflow with {name}() failed: "
                            f"{type(exc).__name__}: {one_line(exc)}; fix: make {name}() build with its default "
                            "arguments") from None
    kind = input_kind(input_type)
    fields = (field_names(input_type) if kind == "fields" else
              scalar_name(workflow, input_type) if kind == "scalar" else [])
    return {"kind": kind, "type": type_name(input_type), "fields": fields}


def scalar_name(workflow: Any, input_type: Any) -> list[str]:
    """The parameter a user's start handler takes its scalar as (``text`` in ``async def classify(self, text: str,
    ctx)``), so a row's column of that name is its input as a flow input's is; none for agent_framework's own
    executors (an Agent) or a handler it cannot tell."""
    executor = workflow.get_start_executor()
    if type(executor).__module__.startswith("agent_framework"):
        return []
    handlers = getattr(executor, "_handlers", None) or {}  # agent_framework's private: declared type -> handler
    handler = next((found for declared, found in handlers.items() if input_type in union_members(declared)), None)
    try:
        parameters = list(inspect.signature(handler).parameters.values()) if handler is not None else []
    except (TypeError, ValueError):
        return []
    names = [parameter.name for parameter in parameters if parameter.name != "self"]
    return names[:1]


# --- the start executor's input ------------------------------------------------------------------------


def start_input_type(workflow: Any) -> Any:
    """The first type the start executor's handlers take that a row can become (unions looked into), skipping
    agent_framework's own messages: an Agent as start executor takes its str, not an AgentExecutorResponse."""
    if not callable(getattr(workflow, "get_start_executor", None)):
        raise WorkflowError(f"the factory returned a {type(workflow).__name__}, not a Workflow; fix: return "
                            "WorkflowBuilder(...).build()")
    declared = workflow.get_start_executor().input_types
    for candidate in itertools.chain.from_iterable(union_members(each) for each in declared):
        if input_kind(candidate) and not getattr(candidate, "__module__", "").startswith("agent_framework"):
            return candidate
    raise WorkflowError(f"its start executor takes {', '.join(map(type_name, declared))}, which a row cannot "
                        "become; fix: give it a handler taking str, dict, a dataclass or a pydantic model")


def union_members(declared: Any) -> tuple[Any, ...]:
    """The members of ``A | B`` (NoneType left out), or the type itself."""
    if isinstance(declared, types.UnionType) or typing.get_origin(declared) is typing.Union:
        return tuple(member for member in typing.get_args(declared) if member is not type(None))
    return (declared,)


def input_kind(input_type: Any) -> str | None:
    """How a row becomes this type: ``scalar`` (its one input), ``dict`` (all inputs), ``fields`` (by name)."""
    if input_type in SCALARS:
        return "scalar"
    if input_type in (Any, object, dict) or typing.get_origin(input_type) in (dict, Mapping):
        return "dict"
    if is_pydantic(input_type) or (isinstance(input_type, type) and dataclasses.is_dataclass(input_type)):
        return "fields"
    return None


def is_pydantic(input_type: Any) -> bool:
    """A pydantic model class (told by its API, so pydantic is not imported for workflows that do not use it)."""
    return isinstance(input_type, type) and hasattr(input_type, "model_fields") and hasattr(input_type,
                                                                                            "model_validate")


def field_names(input_type: Any) -> list[str]:
    """The fields of a dataclass or pydantic model, in declaration order."""
    if is_pydantic(input_type):
        return list(input_type.model_fields)
    return [field.name for field in dataclasses.fields(input_type) if field.init]


def required_fields(input_type: Any) -> list[str]:
    """The fields a row must give (those without a default)."""
    if is_pydantic(input_type):
        return [name for name, field in input_type.model_fields.items() if field.is_required()]
    return [field.name for field in dataclasses.fields(input_type) if field.init
            and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING]


def type_name(declared: Any) -> str:
    return declared.__name__ if isinstance(declared, type) else str(declared)


def to_message(input_type: Any, inputs: Mapping[str, Any]) -> Any:
    """The row's inputs as the message the start executor takes (a field not in the type is left out)."""
    kind = input_kind(input_type)
    if kind == "scalar":
        return to_scalar(input_type, inputs)
    if kind == "dict":
        return dict(inputs)
    missing = [name for name in required_fields(input_type) if name not in inputs]
    if missing:
        raise WorkflowError(f"the start executor takes {type_name(input_type)} and the row has no "
                            f"{', '.join(missing)}; fix: map {'them' if len(missing) > 1 else 'it'} in the "
                            "flow's inputs (a dataset column of that name or a mapping)")
    given = {name: inputs[name] for name in field_names(input_type) if name in inputs}
    return input_type.model_validate(given) if is_pydantic(input_type) else input_type(**given)


def to_scalar(input_type: type, inputs: Mapping[str, Any]) -> Any:
    """The one input of the row, as the str/int/float the start executor takes."""
    if len(inputs) != 1:
        raise WorkflowError(f"the start executor takes one {input_type.__name__} but the row maps {len(inputs)} "
                            f"inputs ({', '.join(inputs) or 'none'}); fix: map exactly one column to it, or take "
                            "a dict, a dataclass or a pydantic model")
    [(name, value)] = inputs.items()
    if isinstance(value, input_type):
        return value
    if input_type is not bool:  # bool("false") is True: no guessing there
        with contextlib.suppress(TypeError, ValueError):
            return input_type(value)
    raise WorkflowError(f"input {name} is {value!r}, not the {input_type.__name__} the start executor takes; "
                        "fix: map a column of that type to it")


# --- outputs ---------------------------------------------------------------------------------------------


def to_outputs(outputs: list[Any], output: str | None = None) -> dict[str, Any]:
    """The row's outputs: the workflow's last output, or the last that has key ``output``, as a dict."""
    if not outputs:
        raise WorkflowError(NO_OUTPUT)
    shaped = [as_dict(each) for each in outputs]
    if output is None:
        return shaped[-1]
    for candidate in reversed(shaped):
        if output in candidate:
            return candidate
    raise WorkflowError(f"no output of the workflow has {output!r} (the last has {', '.join(shaped[-1])}); "
                        f"fix: yield a dict with {output!r} or name one of those")


def as_dict(value: Any) -> dict[str, Any]:
    """A dict as is, a dataclass or pydantic model by its fields, a response by its ``.text``, else ``output``."""
    if isinstance(value, dict):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if is_pydantic(type(value)):
        return typing.cast(dict[str, Any], value.model_dump(mode="json"))
    if not isinstance(value, str) and isinstance(getattr(value, "text", None), str):
        return {"output": value.text}
    return {"output": value}


# --- one row -------------------------------------------------------------------------------------------


async def run_once(factory: Callable[..., Any], args: Mapping[str, Any], inputs: Mapping[str, Any],
                   output: str | None = None) -> dict[str, Any]:
    """One row through a fresh workflow ``factory(**args)`` (an instance cannot run twice at once): its outputs.
    Raises the user's own exception (unwrapped from agent_framework's) or a WorkflowError, both in one line."""
    workflow = factory(**args)
    message = to_message(start_input_type(workflow), inputs)
    try:
        result = await workflow.run(message)
    except Exception as exc:
        cause = root_cause(exc)
        if cause is exc:
            raise
        raise cause from None
    return to_outputs(result.get_outputs(), output)


def root_cause(exc: BaseException) -> BaseException:
    """The exception a row's error should name: agent_framework's wrappers (a ChatClientException around the
    openai error, an exception group from its gathered tasks) taken off."""
    while True:
        group = getattr(exc, "exceptions", None)
        if isinstance(group, tuple) and group and isinstance(group[0], BaseException):
            exc = group[0]
            continue
        inner = exc.__cause__ or next((arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if inner is None or not type(exc).__module__.startswith("agent_framework"):
            return exc
        exc = inner


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pydantic's and openai's messages span several)."""
    return " ".join(str(exc).split())


def user_line(exc: BaseException, file: Path) -> int | None:
    """The line of ``file`` an exception came through last (or its syntax error's line)."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if same_file(frame.filename, file)]
    if lines:
        return lines[-1]
    if isinstance(exc, SyntaxError) and exc.filename and same_file(exc.filename, file):
        return exc.lineno
    return None


def same_file(name: str, file: Path) -> bool:
    return os.path.realpath(name) == str(file)


def shown(file: Path, line: int | None = None) -> str:
    """``file[:line]`` as the user wrote it: relative to the working directory (the project root) when inside."""
    try:
        name = str(file.relative_to(Path.cwd().resolve()))
    except ValueError:
        name = str(file)
    return f"{name}:{line}" if line else name


# --- LLM calls through the session's proxy --------------------------------------------------------------


def route_llm_calls(proxy: str) -> None:
    """Sends every HTTP request of httpx2/httpx (openai's clients) to the session's proxy, which answers it
    through the session's call layer (store, replay, limits), with the row and executor it came from."""
    track_nodes()
    keep_direct(urlsplit(proxy).hostname or "127.0.0.1")
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for client_class in (module.Client, module.AsyncClient):
            patch_send(client_class, proxy.rstrip("/"))
        share_default_ssl_context(module_name)


def share_default_ssl_context(module_name: str) -> None:
    """Every client a workflow builds (one per row, with each fresh workflow) would load the system's CA
    store again, about 35 ms of CPU; here all its requests go to the proxy over plain HTTP, so one default
    context serves every client. A client given its own ``verify`` or ``cert`` still gets its own."""
    try:
        transports = importlib.import_module(f"{module_name}._transports.default")
    except ImportError:
        return
    create = getattr(transports, "create_ssl_context", None)
    if create is None:
        return
    shared: dict[bool, Any] = {}

    @functools.wraps(create)
    def default_once(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if verify is not True or cert:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        if trust_env not in shared:
            shared[trust_env] = create(verify=True, cert=None, trust_env=trust_env)
        return shared[trust_env]

    transports.create_ssl_context = default_once  # type: ignore[attr-defined]


def track_nodes() -> None:
    """Keeps the id of the executor running in NODE (a contextvar: each row and node sees its own)."""
    from agent_framework import Executor

    execute = Executor.execute

    @functools.wraps(execute)
    async def tracked(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = NODE.set(self.id)
        try:
            return await execute(self, *args, **kwargs)
        finally:
            NODE.reset(token)

    Executor.execute = tracked  # type: ignore[method-assign]


def keep_direct(host: str) -> None:
    """The proxy on 127.0.0.1 is reached directly even where HTTP_PROXY sends everything else elsewhere."""
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), host]))


def patch_send(client_class: Any, proxy: str) -> None:
    """Wraps ``client_class.send`` so the request goes to the proxy; the response keeps the original request."""
    send = client_class.send
    if inspect.iscoroutinefunction(send):
        async def routed_async(self: Any, request: Any, **kwargs: Any) -> Any:
            response = await send(self, forwarded(request, proxy), **kwargs)
            response.request = request
            return response

        client_class.send = functools.wraps(send)(routed_async)
    else:
        def routed(self: Any, request: Any, **kwargs: Any) -> Any:
            response = send(self, forwarded(request, proxy), **kwargs)
            response.request = request
            return response

        client_class.send = functools.wraps(send)(routed)


def forwarded(request: Any, proxy: str) -> Any:
    """``request`` sent to ``{proxy}/forward`` (same method, headers and body stream, so streaming works), with
    its URL, row and executor in headers; a request already to the proxy unchanged."""
    target = type(request.url)(f"{proxy}/forward")
    url = request.url
    if (url.scheme, url.host, url.port) == (target.scheme, target.host, target.port):
        return request
    headers = request.headers.copy()
    headers["Host"] = target.netloc.decode("ascii")
    headers[URL_HEADER] = str(url)
    headers[ROW_HEADER] = ROW.get()
    headers[NODE_HEADER] = NODE.get()
    return type(request)(request.method, target, headers=headers, stream=request.stream,
                         extensions=request.extensions)


# --- the protocol ---------------------------------------------------------------------------------------


class Worker:
    """The loaded factories by handle, the rows running, and the one writer of reply lines."""

    def __init__(self, replies: IO[bytes]) -> None:
        self.replies = replies
        self.lock = threading.Lock()
        self.factories: dict[str, Callable[..., Any]] = {}
        self.running: set[asyncio.Task[None]] = set()

    def reply(self, message: dict[str, Any]) -> None:
        """One JSON line, whole: under the lock, so concurrent rows never interleave."""
        line = (json.dumps(message, default=str) + "\n").encode()
        with self.lock:
            try:
                self.replies.write(line)
                self.replies.flush()
            except BrokenPipeError:
                os._exit(0)  # the session is gone: nobody is left to answer

    async def serve(self, requests: IO[bytes]) -> None:
        """Answers requests until ``exit`` (after the rows still running) or the end of stdin (the session ended
        or died: nobody reads the rows still running, so they are cancelled)."""
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, requests.readline):
            request = self.parse(line)
            if request is None:
                continue
            if request.get("op") == "exit":
                await asyncio.gather(*self.running)
                return
            if request.get("op") == "load":
                self.load(request)
            elif request.get("op") == "run":
                task = asyncio.create_task(self.run(request))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
        for task in list(self.running):
            task.cancel()

    def parse(self, line: bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            print(f"pytest-promptflow workflow worker: ignored a line that is not a JSON object: {line[:200]!r}",
                  file=sys.stderr)
            return None
        return request

    def load(self, request: dict[str, Any]) -> None:
        handle = request.get("handle")
        try:
            factory = load_factory(request["path"], request.get("factory") or "create_workflow")
            shape = describe_input(factory, request["path"])
        except WorkflowError as exc:
            self.reply({"handle": handle, "error": str(exc)})
            return
        self.factories[str(handle)] = factory
        self.reply({"handle": handle, "input": shape})

    async def run(self, request: dict[str, Any]) -> None:
        run_id = request.get("id")
        ROW.set(str(run_id))
        factory = self.factories.get(str(request.get("handle")))
        try:
            if factory is None:
                raise WorkflowError(f"no workflow is loaded as {request.get('handle')!r}; fix: load it first")
            outputs = await run_once(factory, request.get("args") or {}, request.get("inputs") or {},
                                     request.get("output"))
        except (Exception, SystemExit) as exc:
            self.reply({"id": run_id, "error_type": type(exc).__name__, "error_message": one_line(exc)})
        else:
            self.reply({"id": run_id, "outputs": outputs})


def protocol_output() -> IO[bytes]:
    """The real stdout, kept for replies alone; fd 1 and sys.stdout now go to stderr, so a print in a workflow
    (or in a process it starts) cannot break a reply line."""
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return replies


def leave_own_folder() -> None:
    """Takes this script's folder off sys.path: the session's modules beside it must not shadow a module a
    workflow imports (the worker itself needs only the stdlib and agent_framework)."""
    here = os.path.realpath(os.path.dirname(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or ".") != here]


def main() -> None:
    leave_own_folder()
    replies = protocol_output()
    proxy = os.environ.get(PROXY_ENV)
    if proxy:
        route_llm_calls(proxy)
    asyncio.run(Worker(replies).serve(sys.stdin.buffer))


if __name__ == "__main__":
    main()
