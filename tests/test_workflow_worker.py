"""The workflow worker, for real: ``worker.py`` run by the second environment's python (agent-framework),
driven over its pipes with the JSON-lines protocol, on small real workflows written here."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Iterator

import pytest
from conftest import MAF_PYTHON, require_second_environment

from pytest_promptflow.workflows import worker as worker_module

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(worker_module.__file__)
TIMEOUT = 60.0

WORKFLOWS = '''
import asyncio
import os
from dataclasses import dataclass

from pydantic import BaseModel
from agent_framework import Executor, WorkflowBuilder, WorkflowContext, handler


class Upper(Executor):
    def __init__(self, suffix: str) -> None:
        super().__init__(id="upper")
        self.suffix = suffix

    @handler
    async def upper(self, text: str, ctx: WorkflowContext[None, str]) -> None:
        if "boom" in text:
            raise ValueError(f"cannot upper-case {text!r}")
        await ctx.yield_output(text.upper() + self.suffix)


def create_workflow(suffix: str = ""):
    return WorkflowBuilder(start_executor=Upper(suffix)).build()


@dataclass
class Question:
    question: str
    context: str
    style: str = "plain"


@dataclass
class Answer:
    answer: str
    words: int


class Answerer(Executor):
    @handler
    async def answer(self, question: Question, ctx: WorkflowContext[None, Answer]) -> None:
        text = f"{question.question} ({question.context}, {question.style})"
        await ctx.yield_output(Answer(answer=text, words=len(text.split())))


def create_dataclass():
    return WorkflowBuilder(start_executor=Answerer(id="answerer")).build()


class Ticket(BaseModel):
    title: str
    priority: int


class Triage(Executor):
    @handler
    async def triage(self, ticket: Ticket, ctx: WorkflowContext[None, dict]) -> None:
        await ctx.yield_output({"route": "urgent" if ticket.priority > 2 else "later", "title": ticket.title})


def create_pydantic():
    return WorkflowBuilder(start_executor=Triage(id="triage")).build()


class Slow(Executor):
    @handler
    async def slow(self, row: dict, ctx: WorkflowContext[None, str]) -> None:
        await asyncio.sleep(row["delay"])
        await ctx.yield_output(row["text"])


def create_slow():
    return WorkflowBuilder(start_executor=Slow(id="slow")).build()


class Counter(Executor):
    """Keeps state across the runs of one instance: a reused workflow would count up."""

    def __init__(self) -> None:
        super().__init__(id="counter")
        self.seen = 0

    @handler
    async def count(self, text: str, ctx: WorkflowContext[None, str]) -> None:
        self.seen += 1
        await ctx.yield_output(f"{text}#{self.seen}")


def create_counting():
    return WorkflowBuilder(start_executor=Counter()).build()


class Silent(Executor):
    @handler
    async def nothing(self, text: str, ctx: WorkflowContext) -> None:
        pass


def create_silent():
    return WorkflowBuilder(start_executor=Silent(id="silent")).build()


class Noisy(Executor):
    @handler
    async def noisy(self, text: str, ctx: WorkflowContext[None, str]) -> None:
        print('{"id": "forged", "outputs": {"output": "from a print"}}')
        print("not json at all {")
        os.write(1, b"written straight to fd 1\\n")
        await ctx.yield_output(text)


def create_printing():
    return WorkflowBuilder(start_executor=Noisy(id="noisy")).build()
'''
#: apart, since importing openai's client takes seconds
ASKING = '''
from agent_framework import Agent, Executor, Message, WorkflowBuilder, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient


class Ask(Executor):
    def __init__(self, stream: bool) -> None:
        super().__init__(id="ask")
        self.stream = stream

    @handler
    async def ask(self, question: str, ctx: WorkflowContext[None, object]) -> None:
        client = OpenAIChatCompletionClient(model="m", api_key="k", base_url="http://example.invalid/v1")
        messages = [Message("user", [question])]
        if self.stream:
            response = await client.get_response(messages, stream=True).get_final_response()
        else:
            response = await client.get_response(messages)
        await ctx.yield_output(response)


def create_asking(stream: bool = False):
    return WorkflowBuilder(start_executor=Ask(stream)).build()


def create_agent():
    client = OpenAIChatCompletionClient(model="m", api_key="k", base_url="http://example.invalid/v1")
    return WorkflowBuilder(start_executor=Agent(client=client, name="solver")).build()
'''


class WorkerProcess:
    """worker.py in the second environment, talked to over its pipes; replies and stderr read by threads so
    a test can wait with a timeout."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen([str(MAF_PYTHON), str(WORKER)], cwd=cwd, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={**standalone_environment(), **(env or {})})
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.stderr: list[bytes] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr.append), daemon=True).start()

    @staticmethod
    def _pump(pipe: IO[bytes], put: Any) -> None:
        for line in iter(pipe.readline, b""):
            put(line)

    def send(self, **request: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()

    def reply(self) -> dict[str, Any]:
        """The next reply line, which must be one JSON object."""
        line = self.lines.get(timeout=TIMEOUT)
        reply = json.loads(line)
        assert isinstance(reply, dict), line
        return reply

    def load(self, handle: str, path: Path, factory: str = "create_workflow") -> dict[str, Any]:
        self.send(op="load", handle=handle, path=str(path), factory=factory)
        return self.reply()

    def run_rows(self, handle: str, rows: list[dict[str, Any]], args: dict[str, Any] | None = None,
                 output: str | None = None) -> list[dict[str, Any]]:
        """Sends every row, then reads one reply per row, in the order they come."""
        for index, inputs in enumerate(rows):
            self.send(op="run", id=f"{handle}-{index}", handle=handle, args=args or {}, inputs=inputs, output=output)
        return [self.reply() for _ in rows]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.send(op="exit")
        return self.process.wait(timeout=TIMEOUT)


def standalone_environment() -> dict[str, str]:
    """This process's environment without PYTHONPATH: the worker must run where pytest_promptflow is not
    importable (the second environment has neither it nor promptflow)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


def by_id(replies: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {reply["id"]: reply for reply in replies}


@pytest.fixture
def flows(tmp_path: Path) -> Path:
    """The project root, with the workflows above in flows/wf/workflow.py and flows/ask/workflow.py."""
    for name, source in [("wf", WORKFLOWS), ("ask", ASKING)]:
        (tmp_path / "flows" / name).mkdir(parents=True)
        (tmp_path / "flows" / name / "workflow.py").write_text(source)
    return tmp_path


@pytest.fixture
def maf_python() -> Path:
    return require_second_environment()


@pytest.fixture
def worker(flows: Path, maf_python: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(flows)
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait()


def test_load_describes_the_start_executors_input(worker: WorkerProcess, flows: Path) -> None:
    path = flows / "flows" / "wf" / "workflow.py"
    assert worker.load("w1", path) == {"handle": "w1", "input": {"kind": "scalar", "type": "str", "fields": ["text"]}}
    assert worker.load("w2", path, "create_dataclass")["input"] == {
        "kind": "fields", "type": "Question", "fields": ["question", "context", "style"]}
    assert worker.load("w3", path, "create_pydantic")["input"] == {
        "kind": "fields", "type": "Ticket", "fields": ["title", "priority"]}
    assert worker.load("w4", path, "create_slow")["input"]["kind"] == "dict"
    assert worker.stop() == 0


def test_load_errors_are_one_line_each_naming_the_file(worker: WorkerProcess, flows: Path) -> None:
    folder = flows / "flows" / "bad"
    folder.mkdir()
    (folder / "imports.py").write_text("import os\n\nimport no_such_module_here\n")
    (folder / "raises.py").write_text("X = 1\nraise RuntimeError('config missing')\n")
    (folder / "helper.py").write_text("def broken(:\n")
    (folder / "uses_helper.py").write_text("import helper\n")
    (folder / "nofactory.py").write_text("def build():\n    pass\n")
    (folder / "notcallable.py").write_text("create_workflow = 3\n")
    (folder / "cannot_build.py").write_text("def create_workflow(model):\n    return model\n")
    (folder / "not_a_workflow.py").write_text("def create_workflow():\n    return 'a string'\n")
    errors = {name: worker.load(name, folder / f"{name}.py")["error"]
              for name in ["missing", "imports", "raises", "uses_helper", "nofactory", "notcallable", "cannot_build",
                           "not_a_workflow"]}
    assert all("\n" not in error and "Traceback" not in error and "fix: " in error for error in errors.values())
    assert errors["missing"].startswith("flows/bad/missing.py: no such workflow file; fix: ")
    assert errors["imports"].startswith("flows/bad/imports.py:3: ModuleNotFoundError: No module named "
                                        "'no_such_module_here'; fix: install no_such_module_here into the workflow "
                                        f"environment ({MAF_PYTHON}")
    assert errors["raises"].startswith("flows/bad/raises.py:2: RuntimeError: config missing; fix: ")
    assert errors["uses_helper"].startswith("flows/bad/uses_helper.py:1: SyntaxError: ")
    assert errors["nofactory"] == ("flows/bad/nofactory.py: has no create_workflow; fix: define it or name the "
                                   "factory after the second colon")
    assert errors["notcallable"].startswith("flows/bad/notcallable.py: create_workflow is a int, not callable")
    assert errors["cannot_build"].startswith("flows/bad/cannot_build.py: building the workflow with "
                                             "create_workflow() failed: TypeError: ")
    assert "missing 1 required positional argument: 'model'" in errors["cannot_build"]
    assert errors["not_a_workflow"].startswith("flows/bad/not_a_workflow.py: the factory returned a str, not a "
                                               "Workflow; fix: ")
    # the worker survives them all
    assert "input" in worker.load("good", flows / "flows" / "wf" / "workflow.py")
    assert worker.stop() == 0


def test_rows_run_concurrently_and_replies_come_back_by_id(worker: WorkerProcess, flows: Path) -> None:
    worker.load("slow", flows / "flows" / "wf" / "workflow.py", "create_slow")
    rows = [{"text": f"row {index}", "delay": delay} for index, delay in enumerate([1.2, 0.8, 0.4, 0.0])]
    started = time.monotonic()
    replies = worker.run_rows("slow", rows)
    elapsed = time.monotonic() - started
    # one after the other, the replies would come in the order sent and take the delays' sum (2.4 s)
    assert [reply["id"] for reply in replies] == ["slow-3", "slow-2", "slow-1", "slow-0"]
    assert {reply["id"]: reply["outputs"] for reply in replies} == {
        f"slow-{index}": {"output": f"row {index}"} for index in range(4)}
    assert elapsed < 2.4
    assert worker.stop() == 0


def test_a_fresh_workflow_per_row(worker: WorkerProcess, flows: Path) -> None:
    worker.load("count", flows / "flows" / "wf" / "workflow.py", "create_counting")
    replies = by_id(worker.run_rows("count", [{"text": "a"}, {"text": "b"}, {"text": "c"}]))
    assert [replies[f"count-{index}"]["outputs"] for index in range(3)] == [
        {"output": "a#1"}, {"output": "b#1"}, {"output": "c#1"}]
    assert worker.stop() == 0


def test_inputs_by_type_and_outputs_by_shape(worker: WorkerProcess, flows: Path) -> None:
    path = flows / "flows" / "wf" / "workflow.py"
    worker.load("upper", path)
    worker.load("dc", path, "create_dataclass")
    worker.load("pyd", path, "create_pydantic")
    upper = by_id(worker.run_rows("upper", [{"question": "hi"}, {"question": "hi", "extra": "x"}, {"n": 7}],
                                  args={"suffix": "!"}))
    assert upper["upper-0"] == {"id": "upper-0", "outputs": {"output": "HI!"}}
    assert upper["upper-1"]["error_message"].startswith("the start executor takes one str but the row maps 2 "
                                                        "inputs (question, extra); fix: ")
    assert upper["upper-2"]["outputs"] == {"output": "7!"}
    dc = by_id(worker.run_rows("dc", [{"question": "why", "context": "sky", "ignored": 1}, {"style": "x"}]))
    assert dc["dc-0"]["outputs"] == {"answer": "why (sky, plain)", "words": 3}
    assert dc["dc-1"]["error_type"] == "WorkflowError"
    assert dc["dc-1"]["error_message"].startswith("the start executor takes Question and the row has no question, "
                                                  "context; fix: ")
    pyd = by_id(worker.run_rows("pyd", [{"title": "down", "priority": 3}, {"title": "typo"},
                                        {"title": "t", "priority": "high"}]))
    assert pyd["pyd-0"]["outputs"] == {"route": "urgent", "title": "down"}
    assert pyd["pyd-1"]["error_message"].startswith("the start executor takes Ticket and the row has no priority")
    assert pyd["pyd-2"]["error_type"] == "ValidationError"
    assert "\n" not in pyd["pyd-2"]["error_message"] and "priority" in pyd["pyd-2"]["error_message"]
    assert worker.stop() == 0


def test_failing_and_silent_rows_are_errors_of_their_own(worker: WorkerProcess, flows: Path) -> None:
    path = flows / "flows" / "wf" / "workflow.py"
    worker.load("upper", path)
    worker.load("silent", path, "create_silent")
    upper = by_id(worker.run_rows("upper", [{"text": "fine"}, {"text": "boom here"}, {"text": "also fine"}]))
    assert upper["upper-1"] == {"id": "upper-1", "error_type": "ValueError",
                                "error_message": "cannot upper-case 'boom here'"}
    assert upper["upper-0"]["outputs"] == {"output": "FINE"} and upper["upper-2"]["outputs"] == {"output": "ALSO FINE"}
    assert worker.run_rows("silent", [{"text": "x"}]) == [{
        "id": "silent-0", "error_type": "WorkflowError",
        "error_message": "the workflow yielded no output; fix: call ctx.yield_output(...) in its last executor"}]
    worker.send(op="run", id="nope", handle="never-loaded", args={}, inputs={"text": "x"}, output=None)
    assert worker.reply()["error_message"].startswith("no workflow is loaded as 'never-loaded'")
    assert worker.stop() == 0


def test_prints_go_to_stderr_not_into_the_protocol(worker: WorkerProcess, flows: Path) -> None:
    worker.load("noisy", flows / "flows" / "wf" / "workflow.py", "create_printing")
    replies = worker.run_rows("noisy", [{"text": "a"}, {"text": "b"}])
    assert by_id(replies) == {"noisy-0": {"id": "noisy-0", "outputs": {"output": "a"}},
                              "noisy-1": {"id": "noisy-1", "outputs": {"output": "b"}}}
    assert worker.stop() == 0
    assert worker.lines.empty()
    stderr = b"".join(worker.stderr)
    assert stderr.count(b"not json at all {") == 2 and stderr.count(b"written straight to fd 1") == 2


def test_the_worker_ends_when_its_stdin_closes(worker: WorkerProcess, flows: Path) -> None:
    worker.load("slow", flows / "flows" / "wf" / "workflow.py", "create_slow")
    worker.send(op="run", id="forever", handle="slow", args={}, inputs={"text": "x", "delay": 3600}, output=None)
    assert worker.process.stdin is not None
    worker.process.stdin.close()  # what a dying session leaves
    assert worker.process.wait(timeout=TIMEOUT) == 0


# --- LLM calls through the session's proxy --------------------------------------------------------------

ANSWER = "forty-two"
REFUSAL = "replay: no stored answer for this request"


class ProxyDouble(BaseHTTPRequestHandler):
    """A test double of the session's proxy (llm/proxy.py, built for real on the session side): records what
    it is sent and answers as the chat-completions API would, in one body or as a stream."""

    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if "refuse" in json.dumps(body["messages"]):
            # as the session's proxy answers a request it has no stored answer for
            self._send("application/json", json.dumps({"error": {"message": REFUSAL, "type": "invalid_request_error",
                                                                 "code": None}}).encode(), status=400)
        elif body.get("stream"):
            self._send("text/event-stream", b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in [
                completion({"role": "assistant", "content": "forty-"}, "chat.completion.chunk", delta=True),
                completion({"content": "two"}, "chat.completion.chunk", delta=True, finish="stop"),
            ]) + b"data: [DONE]\n\n")
        else:
            self._send("application/json", json.dumps(completion({"role": "assistant", "content": ANSWER},
                                                                  "chat.completion", finish="stop")).encode())

    def _send(self, content_type: str, payload: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def completion(message: dict[str, Any], kind: str, delta: bool = False, finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": kind, "created": 0, "model": "m",
            "choices": [{"index": 0, "delta" if delta else "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7} if finish else None}


@pytest.fixture
def proxy() -> Iterator[str]:
    ProxyDouble.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ProxyDouble)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("factory", "stream", "node"), [("create_asking", False, "ask"),
                                                        ("create_asking", True, "ask"),
                                                        ("create_agent", False, "solver")])
def test_llm_calls_go_to_the_proxy_with_their_url_row_and_node(maf_python: Path, flows: Path, proxy: str,
                                                               factory: str, stream: bool, node: str) -> None:
    routed = WorkerProcess(flows, {worker_module.PROXY_ENV: proxy})
    try:
        assert routed.load("ask", flows / "flows" / "ask" / "workflow.py", factory)["input"]["kind"] == "scalar"
        replies = by_id(routed.run_rows("ask", [{"question": "what is six times seven?"}, {"question": "refuse"}],
                                        args={"stream": True} if stream else {}))
        assert routed.stop() == 0
    finally:
        routed.process.kill()
    assert replies["ask-0"] == {"id": "ask-0", "outputs": {"output": ANSWER}}, b"".join(routed.stderr).decode()
    # the openai error the proxy's answer raised, not agent_framework's ChatClientException around it
    assert replies["ask-1"]["error_type"] == "BadRequestError"
    assert REFUSAL in replies["ask-1"]["error_message"] and "\n" not in replies["ask-1"]["error_message"]
    [call] = [call for call in ProxyDouble.received if call["headers"]["X-Pytest-Promptflow-Row"] == "ask-0"]
    headers = {name.lower(): value for name, value in call["headers"].items()}
    assert call["path"] == "/forward"
    assert headers["x-pytest-promptflow-url"] == "http://example.invalid/v1/chat/completions"
    assert headers["x-pytest-promptflow-row"] == "ask-0"
    assert headers["x-pytest-promptflow-node"] == node
    assert headers["authorization"] == "Bearer k"
    assert headers["host"] == proxy.removeprefix("http://")
    assert call["body"]["model"] == "m" and call["body"].get("stream", False) is stream
    assert call["body"]["messages"][-1] == {"role": "user", "content": "what is six times seven?"}


def test_clients_built_per_row_share_one_default_tls_context(maf_python: Path, flows: Path, proxy: str) -> None:
    """Each fresh workflow builds its clients again; routed to the proxy over plain HTTP, they share the default
    TLS context instead of loading the CA store each (about 35 ms a row), and one given its own keeps it."""
    script = flows / "contexts.py"
    script.write_text(f"""
import ssl, sys
sys.path.insert(0, {str(WORKER.parent)!r})
import httpx2
from worker import route_llm_calls

route_llm_calls({proxy!r})
context = lambda client: client._transport._pool._ssl_context
own = ssl.create_default_context()
first, second, unverified = httpx2.AsyncClient(), httpx2.Client(), httpx2.Client(verify=False)
print(context(first) is context(second), context(first).verify_mode == ssl.CERT_REQUIRED,
      context(unverified) is context(first), context(httpx2.Client(verify=own)) is own)
""")
    result = subprocess.run([str(maf_python), str(script)], cwd=flows, capture_output=True, text=True,
                            env=standalone_environment(), timeout=TIMEOUT)
    assert result.stdout.split() == ["True", "True", "False", "True"], result.stderr


def test_a_serving_script_imports_load_factory_and_run_once(maf_python: Path, flows: Path) -> None:
    """What a deployment's server does: the worker module imported (no side effects), one row at a time."""
    script = flows / "serve.py"
    script.write_text(f"""
import asyncio, sys
sys.path.insert(0, {str(WORKER.parent)!r})
from worker import WorkflowError, load_factory, run_once

factory = load_factory("flows/wf/workflow.py")
print(asyncio.run(run_once(factory, {{"suffix": "?"}}, {{"text": "hi"}})))
for path, name, inputs in [("flows/wf/missing.py", "create_workflow", {{}}),
                           ("flows/wf/workflow.py", "create_silent", {{"text": "x"}}),
                           ("flows/wf/workflow.py", "create_workflow", {{"text": "boom"}})]:
    try:
        asyncio.run(run_once(load_factory(path, name), {{}}, inputs))
    except (WorkflowError, ValueError) as exc:
        print(type(exc).__name__, exc)
""")
    result = subprocess.run([str(maf_python), str(script)], cwd=flows, capture_output=True, text=True,
                            env=standalone_environment(), timeout=TIMEOUT)
    assert result.stdout.splitlines() == [
        "{'output': 'HI?'}",
        "WorkflowError flows/wf/missing.py: no such workflow file; fix: correct the path after 'maf:' (it is "
        "relative to the project root)",
        f"WorkflowError {worker_module.NO_OUTPUT}",
        "ValueError cannot upper-case 'boom'",
    ], result.stderr


def test_modules_beside_the_worker_do_not_shadow_a_workflows_imports(worker: WorkerProcess, flows: Path) -> None:
    (flows / "flows" / "wf" / "shadowed.py").write_text(
        "import worker\n\ndef create_workflow():\n    return worker.create_workflow()\n")
    error = worker.load("shadowed", flows / "flows" / "wf" / "shadowed.py")["error"]
    assert error.startswith("flows/wf/shadowed.py:1: ModuleNotFoundError: No module named 'worker'")
    assert worker.stop() == 0
