"""Transcripts: every LLM call of a row, as sent and as answered, in ``Row.calls`` and report.json.

The embedded model answers through our call layer (truncation, streams, the store); a project's DAG flow
with two prompt variants and a prompty judge reach a real local endpoint (fault_endpoint.py); the pure
reading of request and answer bodies is tested on the shapes the OpenAI API documents.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest

from pytest_promptflow.llm import ledger, translate
from pytest_promptflow.llm.calls import CallLayer, ReplayMiss
from pytest_promptflow.llm.embedded import EmbeddedModel
from pytest_promptflow.llm.intercept import activate
from pytest_promptflow.llm.settings import LLMSettings
from pytest_promptflow.llm.transcript import LLMCall, Message, http_error, read_answer, read_request

PROVIDER = "embedded:test"
DEAD = "http://127.0.0.1:9"  # nothing listens: only the store can answer
ASK = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}]


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model = EmbeddedModel(tmp_path_factory.mktemp("shared"), owner_pid=os.getpid())
    yield model.address()
    model.stop()


@pytest.fixture
def layer(tmp_path: Path) -> Iterator[CallLayer]:
    layer = CallLayer(LLMSettings(store=tmp_path / "store"))
    activate(layer)
    yield layer
    activate(None)


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
    assert read_answer("completions", {"choices": [{"text": "ab", "finish_reason": "length"}]}) == ("ab", "length", True)
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
