"""The OpenAI Responses API: the embedded model answers it (whole and streamed), and the call layer
stores, replays, retries and counts it like chat completions. The openai SDK makes every request."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from pytest_promptflow.llm import ledger, translate
from pytest_promptflow.llm.accounting import Usage, usage_of
from pytest_promptflow.llm.calls import CallLayer, ReplayMiss
from pytest_promptflow.llm.intercept import activate
from pytest_promptflow.llm.retry import RetryPolicy
from pytest_promptflow.llm.settings import LLMSettings

PROVIDER = "embedded:test"
DEAD = "http://127.0.0.1:9"  # nothing listens: only the store can answer
ASK = {"model": "gpt-4o-mini", "instructions": "Answer with one word.", "input": "Capital of France?",
       "max_output_tokens": 8, "temperature": 0.0}
STREAM_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done", "response.completed"]


def stats(address: str) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{address}/stats", timeout=10) as response:
        return dict(json.load(response))


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0)


def streamed(events: Any) -> tuple[list[str], str, Any]:
    """The event types, the joined text deltas and the final response of a streamed answer."""
    types, text, final = [], "", None
    for event in events:
        types.append(event.type)
        text += getattr(event, "delta", "") if event.type == "response.output_text.delta" else ""
        final = event.response if event.type == "response.completed" else final
    return types, text, final


# -- the translation, pure --
def test_a_responses_request_becomes_the_chat_request_that_asks_the_same() -> None:
    chat = translate.chat_request({**ASK, "input": [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Capital "},
                                                        {"type": "input_text", "text": "of France?"}]}]})
    assert chat == {"messages": [{"role": "system", "content": "Answer with one word."},
                                 {"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Capital of France?"}],
                    "max_tokens": 8, "temperature": 0.0}
    assert translate.chat_request({"input": "hi"}) == {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("body", [{"input": "x", "tools": [{"type": "web_search"}]},
                                  {"input": [{"type": "function_call_output", "output": "1"}]},
                                  {"input": [{"role": "user", "content": [{"type": "input_image"}]}]}])
def test_what_the_model_cannot_do_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        translate.chat_request(body)


def test_deltas_join_back_to_the_text() -> None:
    for text in ("", "Paris", " two  words\nand a line ", "   "):
        assert "".join(translate.deltas(text)) == text


def test_usage_is_counted_from_responses_objects_and_from_streams() -> None:
    assert usage_of({"usage": {"input_tokens": 7, "output_tokens": 3}}) == Usage(7, 3)
    response = translate.response_object(ASK, {"choices": [{"message": {"content": "Paris"}}],
                                                "usage": {"prompt_tokens": 11, "completion_tokens": 2}}, "m")
    assert usage_of(translate.response_events(response)) == Usage(11, 2)
    chat = {"choices": [{"message": {"content": "Paris"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    assert usage_of(translate.chat_events(chat, include_usage=True)) == Usage(5, 1)
    assert usage_of(translate.chat_events(chat, include_usage=False)) == Usage()


# -- the embedded model answers --
@pytest.mark.parametrize("path", ["/v1", "/openai/deployments/gpt-4o-mini"])
def test_the_embedded_model_answers_responses_whole(address: str, path: str) -> None:
    response = client(address + path).responses.create(**ASK)
    assert response.status == "completed" and response.object == "response"
    assert isinstance(response.output_text, str) and response.output_text.strip()
    assert response.output[0].content[0].text == response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0


def test_azure_responses_path_is_answered(address: str) -> None:
    azure = openai.AzureOpenAI(azure_endpoint=address, api_key="not-a-key", api_version="2025-04-01-preview",
                               max_retries=0)
    before = stats(address).get("responses", 0)
    assert azure.responses.create(**ASK).output_text.strip()
    assert stats(address)["responses"] == before + 1


def test_the_embedded_model_streams_responses_events_in_order(address: str) -> None:
    types, text, final = streamed(client(f"{address}/v1").responses.create(**ASK, stream=True))
    assert [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]] == STREAM_EVENTS
    assert text and text == final.output_text and final.status == "completed"
    assert final.usage.output_tokens > 0


def test_the_embedded_model_streams_chat(address: str) -> None:
    chunks = list(client(f"{address}/v1").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


# -- through the call layer --
@pytest.mark.parametrize("stream", [False, True])
def test_a_second_identical_call_is_answered_from_the_store_and_replays_with_no_server(
        address: str, layer: CallLayer, tmp_path: Path, stream: bool) -> None:
    layer.register(address, "aoai", PROVIDER)
    served = stats(address).get("responses", 0)

    def ask(base: str) -> tuple[str, ledger.RowCalls]:
        with ledger.scope("test") as calls:
            answer = client(f"{base}/v1").responses.create(**ASK, stream=stream)
            text = streamed(answer)[1] if stream else answer.output_text
        return text, calls

    live, first = ask(address)
    stored, second = ask(address)
    assert stored == live and live.strip()
    assert stats(address)["responses"] == served + 1
    assert layer.tally == {"live": 1, "from store": 1}
    assert (first.cache_hits, second.cache_hits) == (0, 1)
    assert first.prompt_tokens > 0 and first.completion_tokens > 0
    assert (second.prompt_tokens, second.completion_tokens) == (first.prompt_tokens, first.completion_tokens)

    replay = CallLayer(LLMSettings(mode="replay", store=tmp_path / "store"))
    replay.register(DEAD, "aoai", PROVIDER)
    activate(replay)
    assert ask(DEAD)[0] == live
    with pytest.raises(ReplayMiss):
        client(f"{DEAD}/v1").responses.create(**{**ASK, "input": "Capital of Spain?"})


class Flaky(BaseHTTPRequestHandler):
    """Fails the first /v1/responses request with HTTP 500 and answers every later one."""

    attempts = 0
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).attempts += 1
        chat = {"choices": [{"message": {"content": "Paris"}}], "usage": {"prompt_tokens": 9, "completion_tokens": 1}}
        status, answer = (500, {"error": {"message": "boom"}}) if self.attempts == 1 else (
            200, translate.response_object(body, chat, "m"))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_a_failed_responses_call_is_retried_by_the_layer_alone(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    layer = CallLayer(LLMSettings(store=tmp_path, retry=RetryPolicy(backoff=0.01)))
    activate(layer)
    try:
        with ledger.scope("test") as calls:
            answer = client(f"http://127.0.0.1:{server.server_address[1]}/v1").responses.create(**ASK)
    finally:
        activate(None)
        server.shutdown()
    assert answer.output_text == "Paris" and Flaky.attempts == 2
    assert layer.tally == {"live": 1} and (calls.prompt_tokens, calls.completion_tokens) == (9, 1)


def test_the_async_client_is_stored_and_counted_too(address: str, layer: CallLayer) -> None:
    layer.register(address, "aoai", PROVIDER)
    ask = openai.AsyncOpenAI(base_url=f"{address}/v1", api_key="not-a-key", max_retries=0).responses.create

    async def twice() -> list[str]:
        return [(await ask(**{**ASK, "input": "Capital of Italy?"})).output_text for _ in range(2)]

    first, second = asyncio.run(twice())
    assert first == second and first.strip() and layer.tally == {"live": 1, "from store": 1}
