"""Transcripts: every LLM call of a row, as sent and as answered, in ``Row.calls`` and report.json.

The embedded model answers through our call layer (truncation, streams, the store); a project's DAG flow
with two prompt variants and a prompty judge reach a real local endpoint (fault_endpoint.py); the pure
reading of request and answer bodies is tested on the shapes the OpenAI API documents.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
from conftest import Project, run
from fault_endpoint import FaultEndpoint
from llm_variants import DEPLOYMENT, SYSTEM, write_flows

from pytest_promptflow.llm import ledger, translate
from pytest_promptflow.llm.calls import CallLayer, ReplayMiss
from pytest_promptflow.llm.intercept import activate
from pytest_promptflow.llm.settings import LLMSettings
from pytest_promptflow.llm.transcript import LLMCall, Message, http_error, read_answer, read_request
from pytest_promptflow.reporting.records import merge

PROVIDER = "embedded:test"
DEAD = "http://127.0.0.1:9"  # nothing listens: only the store can answer
ASK = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}]


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-a-key", max_retries=0)


def transcribed(ask: Any) -> tuple[LLMCall, ...]:
    """The transcript of the calls ``ask()`` makes inside a row."""
    with ledger.scope("test") as calls:
        ask()
    return tuple(calls.transcript)


# -- the embedded model, through the call layer --
def test_a_chat_call_is_transcribed_and_its_stored_answer_too(address: str, layer: CallLayer) -> None:
    layer.register(address, "aoai", PROVIDER)
    replies: list[str | None] = []

    def ask() -> None:
        reply = client(address).chat.completions.create(model="gpt-x", messages=ASK, max_tokens=8, temperature=0.0,
                                                        seed=7)
        replies.append(reply.choices[0].message.content)

    (live,), (stored,) = transcribed(ask), transcribed(ask)
    assert live.kind == "chat/completions" and live.model == "gpt-x" and live.node is None
    assert live.messages == (Message("system", "Answer in one word."), Message("user", "Capital of France?"))
    assert live.prompt == "system: Answer in one word.\nuser: Capital of France?"
    assert live.parameters == {"max_tokens": 8, "temperature": 0.0, "seed": 7}
    assert live.answer == replies[0] and live.answer.strip()
    assert live.finish_reason in ("stop", "length") and live.truncated == (live.finish_reason == "length")
    assert live.prompt_tokens > 0 and live.completion_tokens > 0 and live.cost == 0.0
    assert live.latency is not None and live.latency > 0 and not live.from_store and live.error is None
    assert stored.from_store and stored.latency is None
    assert (stored.answer, stored.messages, stored.prompt_tokens) == (replies[1], live.messages, live.prompt_tokens)


def test_an_answer_cut_at_max_tokens_is_flagged_truncated(address: str, layer: CallLayer) -> None:
    (call,) = transcribed(lambda: client(address).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Count from one to twenty in words."}], max_tokens=1))
    assert (call.finish_reason, call.truncated, call.completion_tokens) == ("length", True, 1)
    assert call.answer and call.error is None


def test_a_streamed_answer_is_reassembled_from_its_events(address: str, layer: CallLayer) -> None:
    pieces: list[str] = []

    def ask() -> None:
        stream = client(address).chat.completions.create(model="m", messages=ASK, max_tokens=8, stream=True)
        pieces.extend(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    (call,) = transcribed(ask)
    assert call.answer == "".join(pieces) and call.answer.strip()
    assert call.parameters == {"max_tokens": 8, "stream": True} and call.finish_reason in ("stop", "length")


def test_a_responses_call_keeps_its_instructions_input_and_output_text(address: str, layer: CallLayer) -> None:
    answers: list[str] = []
    ask = {"model": "m", "instructions": "Answer with one word.", "input": "Capital of Italy?",
           "max_output_tokens": 8}
    (call,) = transcribed(lambda: answers.append(client(address).responses.create(**ask).output_text))
    assert call.messages == (Message("instructions", "Answer with one word."), Message("user", "Capital of Italy?"))
    assert call.parameters == {"max_output_tokens": 8}
    assert (call.answer, call.finish_reason, call.truncated) == (answers[0], "completed", False)


def test_a_replay_miss_is_transcribed_with_its_reason(tmp_path: Path) -> None:
    replay = CallLayer(LLMSettings(mode="replay", store=tmp_path / "empty"))
    activate(replay)
    try:
        with ledger.scope("flow f, row 0 of dataset d") as calls, pytest.raises(ReplayMiss):
            client(DEAD).chat.completions.create(model="m", messages=ASK)
    finally:
        activate(None)
    (call,) = calls.transcript
    assert call.error == calls.replay_misses[0] and call.answer == "" and call.messages[1].content == ASK[1]["content"]


class Refusing(BaseHTTPRequestHandler):
    """Refuses every request with HTTP 400 and an OpenAI-style error body."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        data = json.dumps({"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_refused_call_is_transcribed_with_the_reason_the_endpoint_gave(layer: CallLayer) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ledger.scope("test") as calls, pytest.raises(openai.BadRequestError):
            client(f"http://127.0.0.1:{server.server_address[1]}").chat.completions.create(
                model="m", messages=ASK, max_tokens=10**6)
    finally:
        server.shutdown()
    (call,) = calls.transcript
    assert call.error == "HTTP 400: max_tokens is too large" and call.parameters == {"max_tokens": 10**6}


# -- reading bodies, pure --
def test_the_prompt_of_each_kind_of_request() -> None:
    chat = {"model": "m", "temperature": 0.2, "tools": [{"type": "function"}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "look", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "a cat"}]}
    assert read_request("chat/completions", chat) == (
        (Message("user", "What is [image_url]?"), Message("assistant", '[tool call] look({"q": 1})'),
         Message("tool", "a cat")), {"temperature": 0.2, "tools": [{"type": "function"}]})
    assert read_request("completions", {"prompt": ["a", "b"], "max_tokens": 3}) == (
        (Message("prompt", "a"), Message("prompt", "b")), {"max_tokens": 3})
    assert read_request("embeddings", {"input": "some text", "model": "e"}) == ((Message("input", "some text"),), {})
    assert read_request("responses", {"input": [
        {"role": "developer", "content": "Be brief."},
        {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
        {"type": "function_call_output", "call_id": "c", "output": "42"}]})[0] == (
        Message("developer", "Be brief."), Message("assistant", "[tool call] f({})"), Message("tool", "42"))


def test_the_answer_of_each_kind_whole_and_streamed() -> None:
    tool = {"choices": [{"message": {"content": None, "tool_calls": [
        {"function": {"name": "look", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}
    assert read_answer("chat/completions", tool) == ("[tool call] look({})", "tool_calls", False)
    cut = {"choices": [{"text": "ab", "finish_reason": "length"}]}
    assert read_answer("completions", cut) == ("ab", "length", True)
    chat = {"choices": [{"message": {"content": "Paris is the"}, "finish_reason": "length"}]}
    assert read_answer("chat/completions", translate.chat_events(chat, include_usage=True)) == (
        "Paris is the", "length", True)
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
                  "output": [{"type": "message", "content": [{"type": "output_text", "text": "Pa"}]}]}
    assert read_answer("responses", incomplete) == ("Pa", "max_output_tokens", True)
    whole = translate.response_object({}, {"choices": [{"message": {"content": "Rome"}}]}, "m")
    assert read_answer("responses", translate.response_events(whole)) == ("Rome", "completed", False)
    pieces = "".join(f"data: {json.dumps({'choices': [{'delta': {'tool_calls': [call]}}]})}\n\n" for call in (
        {"index": 0, "function": {"name": "lo"}}, {"index": 0, "function": {"name": "ok", "arguments": "{\"q\""}},
        {"index": 0, "function": {"arguments": ": 1}"}}))
    assert read_answer("chat/completions", pieces)[0] == '[tool call] look({"q": 1})'


def test_embeddings_are_described_never_copied() -> None:
    floats = {"data": [{"embedding": [0.1, 0.2, 0.3]}, {"embedding": [0.4, 0.5, 0.6]}]}
    packed = {"data": [{"embedding": base64.b64encode(struct.pack("4f", 1, 2, 3, 4)).decode()}]}
    assert read_answer("embeddings", floats) == ("2 vectors of 3 dimensions", None, False)
    assert read_answer("embeddings", packed) == ("1 vector of 4 dimensions", None, False)


def test_a_refused_request_says_why_in_one_line() -> None:
    assert http_error(400, {"error": {"message": "max_tokens is\ntoo large", "code": "x"}}) == \
        "HTTP 400: max_tokens is too large"
    assert http_error(502, None) == "HTTP 502"


# -- a project's flow and judge against a real local endpoint --
ROWS = ["a good day", "<img src=x onerror=alert(1)>", "[always:500] never answered"]
TESTS = '''
import json

import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/rows.jsonl")
def test_calls(flow_run):
    with open("calls.json", "w") as file:
        json.dump([[call.as_json() for call in row.calls] for row in flow_run.rows], file)
    assert flow_run.rows[0].calls[-1].answer == "echo: a good day"
    judged = flow_run.evaluate("flows/judge.prompty", mapping={"answer": "${run.outputs.category}"})
    assert [len(calls) for calls in judged.calls] == [1, 1, 0]  # none on the row whose flow failed
    assert judged.calls[0][0].answer == "echo: echo: a good day"
'''


@pytest.fixture
def endpoint() -> Iterator[FaultEndpoint]:
    with FaultEndpoint() as server:
        yield server


def run_project(project: Project) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Runs the project's test; the calls each row of its run made, and its cell's rows in report.json."""
    run(project.pytester, "--promptflow-report", "out", "--promptflow-llm-retries=2").assert_outcomes(passed=1)
    (flow,) = json.loads((project.path / "out" / "report.json").read_text())["flows"]
    return json.loads((project.path / "calls.json").read_text()), flow["cells"][0]["rows"]


def test_rows_carry_their_calls_into_python_and_report_json(
        project: Project, endpoint: FaultEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    write_flows(project, endpoint, monkeypatch)
    project.data("rows", [{"text": text} for text in ROWS])
    project.pytester.makepyfile(test_calls=TESTS)
    calls, rows = run_project(project)

    assert [len(row) for row in calls] == [1, 1, 1]
    for text, (call,) in zip(ROWS[:2], calls, strict=False):
        assert (call["node"], call["kind"], call["model"]) == ("classify", "chat/completions", DEPLOYMENT)
        assert call["messages"] == [{"role": "system", "content": SYSTEM["variant_0"]},
                                    {"role": "user", "content": text}]
        assert call["parameters"]["max_tokens"] == 20 and call["parameters"]["temperature"] == 0.0
        assert (call["answer"], call["finish_reason"], call["truncated"]) == (endpoint.answer(text), "stop", False)
        assert (call["prompt_tokens"], call["completion_tokens"]) == endpoint.usage(text)
        assert call["latency"] > 0 and not call["from_store"] and call["error"] is None
    (failed,) = calls[2]
    assert "gave up after 3 attempts, last: HTTP 500" in failed["error"] and failed["answer"] == ""
    assert failed["messages"][1]["content"] == ROWS[2]

    # report.json: the flow's calls, then the judge's on the rows whose flow answered
    assert [[call["evaluator"] for call in row["calls"]] for row in rows] == [[None, "judge"], [None, "judge"], [None]]
    assert [[{k: v for k, v in call.items() if k != "evaluator"} for call in row["calls"][:1]] for row in rows] == calls
    judged = rows[0]["calls"][1]
    assert judged["messages"] == [{"role": "system", "content": "Rate the answer from 1 to 5."},
                                  {"role": "user", "content": endpoint.answer(ROWS[0])}]
    assert judged["answer"] == endpoint.answer(endpoint.answer(ROWS[0])) and judged["parameters"]["max_tokens"] == 5

    # a second run: every answer that was got comes from the store, with no latency of its own
    endpoint.reset()
    again, rows = run_project(project)
    assert [call["from_store"] for (call,) in again] == [True, True, False]
    assert [call["latency"] for (call,) in again[:2]] == [None, None]
    assert [call["answer"] for (call,) in again] == [call["answer"] for (call,) in calls]
    assert [call["from_store"] for call in rows[0]["calls"]] == [True, True]
    assert {r.message for r in endpoint.requests} == {ROWS[2]}


def test_two_items_on_one_cell_keep_the_flows_calls_once_and_each_judges() -> None:
    """Items of one cell share its run (its flow's calls) and bring their own evaluators' calls."""
    def record(nodeid: str, judge: str) -> dict[str, Any]:
        flow = LLMCall("classify", "chat/completions", "m", (Message("user", "hi"),), answer="hello").as_json()
        judged = LLMCall(None, "chat/completions", "m", (Message("user", "hello"),), answer="5").as_json()
        calls = [dict(flow, evaluator=None), dict(judged, evaluator=judge)]
        return {"flow": "f", "cell": "f-c", "config": "defaults", "dataset": "d", "default": True,
                "items": [{"nodeid": nodeid, "outcome": "passed"}], "verdicts": [], "metrics": {}, "intervals": {},
                "rows": [{"index": 0, "scores": {f"{judge}.score": 5}, "calls": calls}]}

    document = merge([record("t.py::test_b", "tone"), record("t.py::test_a", "truth")], {}, {})
    (row,) = document["flows"][0]["cells"][0]["rows"]
    assert [(call["evaluator"], call["answer"]) for call in row["calls"]] == [
        (None, "hello"), ("truth", "5"), ("tone", "5")]


FLEX_ENTRY = '''\
import os

import openai


def echo(text: str) -> dict:
    client = openai.AzureOpenAI(api_key=os.environ["AOAI_API_KEY"], azure_endpoint=os.environ["AOAI_API_BASE"],
                                api_version="2024-02-01", max_retries=0)
    reply = client.chat.completions.create(model="gpt-35-turbo", messages=[{"role": "user", "content": text}])
    return {"output": reply.choices[0].message.content}
'''


def test_a_flex_flows_calls_name_no_node(project: Project, endpoint: FaultEndpoint,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """promptflow runs a flex flow's line as a stand-in node "Flex"; its calls are the flow's, of no node."""
    write_flows(project, endpoint, monkeypatch)
    project.write("flows/flexecho/flow.flex.yaml", "entry: flexecho:echo\n")
    project.write("flows/flexecho/flexecho.py", FLEX_ENTRY)
    project.data("rows", [{"text": "hello there"}])
    project.pytester.makepyfile(test_flex='''
        import pytest

        @pytest.mark.promptflow(flow="flows/flexecho", data="data/rows.jsonl")
        def test_flex(flow_run):
            (call,) = flow_run.rows[0].calls
            assert (call.node, call.answer) == (None, "echo: hello there")
    ''')
    run(project.pytester).assert_outcomes(passed=1)
