"""The LLM answer store and the request key: content in, credentials out; safe under concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import httpx2
import pytest

from pytest_promptflow.llm import shapes, translate
from pytest_promptflow.llm.calls import CallLayer, _secrets
from pytest_promptflow.llm.settings import LLMSettings
from pytest_promptflow.llm.store import Answer, CallRequest, Store

BODY = {"messages": [{"role": "user", "content": "Capital of France?"}], "temperature": 0.0, "max_tokens": 5}


def request(url: str, body: dict[str, object] = BODY, **headers: str) -> httpx2.Request:
    return httpx2.Request("POST", url, json=body, headers=headers)


def describe(layer: CallLayer, req: httpx2.Request) -> CallRequest:
    call = layer._describe(req)
    assert call is not None
    return call.request


def test_the_key_ignores_credentials_wherever_they_are(tmp_path: Path) -> None:
    layer = CallLayer(LLMSettings(store=tmp_path))
    url = "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-02-01"
    plain = describe(layer, request(url, **{"api-key": "k1"}))
    other_key = describe(layer, request(url + "&api-key=secret", **{"api-key": "k2", "Authorization": "Bearer b"}))
    assert plain.key == other_key.key
    assert plain.model == "gpt-4o" and plain.kind == "chat/completions" and plain.api_version == "2024-02-01"


@pytest.mark.parametrize("change", [
    {"temperature": 0.7}, {"max_tokens": 6}, {"seed": 1},
    {"messages": [{"role": "user", "content": "Capital of Spain?"}]},
])
def test_every_generation_parameter_and_the_prompt_change_the_key(tmp_path: Path, change: dict[str, object]) -> None:
    layer = CallLayer(LLMSettings(store=tmp_path))
    url = "http://127.0.0.1:8000/v1/chat/completions"
    assert describe(layer, request(url)).key != describe(layer, request(url, {**BODY, **change})).key


def test_the_provider_is_the_registered_name_not_the_port(tmp_path: Path) -> None:
    layer = CallLayer(LLMSettings(store=tmp_path))
    layer.register("http://127.0.0.1:4001", "aoai", "embedded:model")
    first = describe(layer, request("http://127.0.0.1:4001/openai/deployments/d/chat/completions"))
    layer.register("http://127.0.0.1:4002", "aoai", "embedded:model")
    second = describe(layer, request("http://127.0.0.1:4002/openai/deployments/d/chat/completions"))
    assert first.key == second.key and first.provider == "embedded:model"
    unregistered = describe(layer, request("http://127.0.0.1:4003/openai/deployments/d/chat/completions"))
    assert unregistered.provider == "http://127.0.0.1:4003"


def test_other_requests_are_not_llm_calls(tmp_path: Path) -> None:
    layer = CallLayer(LLMSettings(store=tmp_path))
    assert layer._describe(httpx2.Request("GET", "http://h/v1/models")) is None
    assert layer._describe(request("http://h/v1/files")) is None
    assert layer._describe(httpx2.Request("POST", "http://h/v1/chat/completions", content=b"not json")) is None


def test_stored_files_are_deterministic_and_hold_no_secret(tmp_path: Path) -> None:
    call = CallRequest("https://res.openai.azure.com", "chat/completions", "gpt-4o", "2024-02-01", BODY)
    answer = Answer(200, "application/json", {"choices": [{"message": {"content": "Paris"}}], "usage": {}})
    first, second = Store(tmp_path / "a"), Store(tmp_path / "b")
    assert first.put(call, answer) and second.put(call, answer)
    text = first.path(call).read_text()
    assert text == second.path(call).read_text()
    assert json.loads(text)["request"]["body"] == BODY
    assert first.get(call) == answer
    assert not first.put(call, Answer(200, "application/json", {"echo": "sk-planted-secret"}),
                         forbidden=("sk-planted-secret",))
    assert first.get(call) == answer


def test_a_torn_or_foreign_file_is_a_miss_and_stray_temp_files_do_no_harm(tmp_path: Path) -> None:
    store = Store(tmp_path)
    call = CallRequest("p", "completions", "m", None, {"prompt": "x"})
    store.path(call).parent.mkdir(parents=True)
    store.path(call).write_text('{"format": 1, "respo')
    (store.path(call).parent / ".abcdefgh-123.tmp").write_text("half")
    assert store.get(call) is None
    store.put(call, Answer(200, "application/json", {"ok": True}))
    assert store.get(call) == Answer(200, "application/json", {"ok": True})


def _write_many(root: str, worker: int) -> None:
    store = Store(Path(root))
    for i in range(40):
        call = CallRequest("p", "completions", "m", None, {"prompt": str(i % 10)})
        store.put(call, Answer(200, "application/json", {"writer": worker, "text": "x" * 5000}))


def test_concurrent_writers_in_threads_and_processes_never_tear_a_file(tmp_path: Path) -> None:
    threads = [threading.Thread(target=_write_many, args=(str(tmp_path), n)) for n in range(4)]
    processes = [multiprocessing.get_context("spawn").Process(target=_write_many, args=(str(tmp_path), 10 + n))
                 for n in range(2)]
    for worker in (*threads, *processes):
        worker.start()
    for worker in (*threads, *processes):
        worker.join()
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 10
    store = Store(tmp_path)
    for i in range(10):
        answer = store.get(CallRequest("p", "completions", "m", None, {"prompt": str(i)}))
        assert answer is not None and answer.body["text"] == "x" * 5000
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_placeholder_key_too_short_to_be_a_secret_does_not_stop_storing() -> None:
    assert _secrets(request("http://h/v1/responses", Authorization="Bearer x")) == ()
    assert _secrets(request("http://h/v1/responses", Authorization="Bearer sk-long")) == ("sk-long",)


CHAT = {"id": "c", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                                             "finish_reason": "stop"}], "usage": {"prompt_tokens": 3}}
RESPONSE = translate.response_object({"input": "Capital of France?"}, CHAT, "m")


@pytest.mark.parametrize(("kind", "body"), [
    ("chat/completions", CHAT),
    ("completions", {"choices": [{"index": 0, "text": "Paris"}]}),
    ("embeddings", {"object": "list", "data": [{"index": 0, "embedding": [0.1, 0.2]}]}),
    ("responses", RESPONSE),
    ("responses", {"output_text": "Paris"}),
    ("chat/completions", translate.chat_events(CHAT, include_usage=True)),
    ("completions", 'data: {"choices": [{"index": 0, "text": "Par"}]}\n\ndata: [DONE]\n\n'),
    ("responses", translate.response_events(RESPONSE)),
], ids=["chat", "legacy", "embeddings", "responses", "output_text", "chat-stream", "legacy-stream",
        "responses-stream"])
def test_answers_of_their_endpoints_shape_are_answers(kind: str, body: object) -> None:
    assert shapes.problem(kind, body) is None


@pytest.mark.parametrize(("kind", "body", "problem"), [
    ("chat/completions", {"error": {"message": "busy"}, "foo": 1}, "no completion (keys: error, foo)"),
    ("chat/completions", {"choices": []}, "no completion (keys: choices)"),
    ("chat/completions", {"choices": [{"text": "legacy"}]}, "no completion (keys: choices)"),
    ("completions", CHAT, "no completion (keys: choices, id, model, usage)"),
    ("embeddings", CHAT, "no embedding (keys: choices, id, model, usage)"),
    ("responses", CHAT, "no response output (keys: choices, id, model, usage)"),
    ("chat/completions", [1, 2], "no completion (a JSON list, not an object)"),
    ("chat/completions", "<html>502 Bad Gateway</html>", "no completion (text that is no answer stream)"),
    ("chat/completions", 'data: {"choices": [{"index": 0, "delta": {"content": "Pa"}}]}\n\n'
                         'data: {"error": {"message": "overloaded"}}\n\n', "no completion (text that is no answer "
                                                                           "stream)"),
    ("responses", 'event: error\ndata: {"type": "error", "message": "x"}\n\n', "no response output (text that is "
                                                                               "no answer stream)"),
], ids=["error-object", "no-choices", "legacy-choice-for-chat", "chat-for-legacy", "chat-for-embeddings",
        "chat-for-responses", "list", "html-page", "stream-cut-by-an-error", "responses-error-stream"])
def test_a_body_of_another_shape_is_no_answer_and_says_what_it_has(kind: str, body: object, problem: str) -> None:
    assert shapes.problem(kind, body) == problem
