"""A row's transcript: each LLM call as it was sent and answered, so a reader sees why a row scored as it did.

The call layer makes one ``LLMCall`` per request it handles (answered live or from the store, failed, or
missed on replay) from the request body and the answer, whole or streamed. Embeddings keep only their
shape, never the vectors.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from .shapes import events

#: request fields that are the prompt (``messages``) or the call's identity (``model``), not a parameter
_PROMPT_FIELDS = ("messages", "prompt", "input", "instructions", "model")


@dataclass(frozen=True)
class Message:
    """One part of the prompt: ``role`` is the chat role, ``prompt`` (completions) or ``input`` (embeddings)."""

    role: str
    content: str


@dataclass(frozen=True)
class LLMCall:
    """One LLM request of a row and what came of it. ``latency``: seconds of the HTTP exchange that answered
    (None for a stored answer or a failed call); ``error``: why it gave no answer."""

    node: str | None
    kind: str  # "chat/completions", "completions", "embeddings", "responses"
    model: str
    messages: tuple[Message, ...]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    answer: str = ""
    finish_reason: str | None = None
    truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency: float | None = None
    from_store: bool = False
    error: str | None = None

    @property
    def prompt(self) -> str:
        """The messages as text, one ``role: content`` block each."""
        return "\n".join(f"{message.role}: {message.content}" for message in self.messages)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def answered(kind: str, model: str, body: Any, node: str | None, answer: Any, *, prompt_tokens: int,
             completion_tokens: int, cost: float, latency: float | None, from_store: bool) -> LLMCall:
    """The call that sent request ``body`` and got ``answer`` (a JSON object, or a stream's event text)."""
    text, finish_reason, truncated = read_answer(kind, answer)
    messages, parameters = read_request(kind, body)
    return LLMCall(node, kind, model, messages, parameters, text, finish_reason, truncated, prompt_tokens,
                   completion_tokens, cost, latency, from_store)


def failed(kind: str, model: str, body: Any, node: str | None, error: str) -> LLMCall:
    """The call that sent request ``body`` and got no answer, for the one-line reason ``error``."""
    messages, parameters = read_request(kind, body)
    return LLMCall(node, kind, model, messages, parameters, error=error)


def http_error(status: int, body: Any) -> str:
    """``HTTP 400: <the error's message>``: what a refused request's body says, in one line."""
    error = body.get("error") if isinstance(body, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else error if isinstance(error, str) else None
    return f"HTTP {status}" + (f": {' '.join(str(message).split())}" if message else "")


# --- the request ---------------------------------------------------------------------------------


def read_request(kind: str, body: Any) -> tuple[tuple[Message, ...], dict[str, Any]]:
    """The prompt of a request body as messages, and the rest of the body (temperature, max_tokens, ...)."""
    if not isinstance(body, Mapping):
        return (), {}
    messages = [Message("instructions", _text(body["instructions"]))] if body.get("instructions") else []
    if "messages" in body:
        messages += [_chat_message(m) for m in _listed(body["messages"])]
    if "prompt" in body:
        messages += [Message("prompt", _text(p)) for p in _listed(body["prompt"], of_tokens=True)]
    if "input" in body and kind == "embeddings":
        messages += [Message("input", _text(item)) for item in _listed(body["input"], of_tokens=True)]
    elif "input" in body:
        messages += [_input_item(item) for item in _listed(body["input"])]
    return tuple(messages), {k: v for k, v in body.items() if k not in _PROMPT_FIELDS}


def _listed(value: Any, of_tokens: bool = False) -> list[Any]:
    """A prompt field's items: a list as it is (a list of token ids is one prompt), anything else alone."""
    if not isinstance(value, list) or (of_tokens and value and all(isinstance(v, int) for v in value)):
        return [value]
    return value


def _chat_message(message: Any) -> Message:
    if not isinstance(message, Mapping):
        return Message("?", _text(message))
    text = _text(message.get("content"))
    calls = _tool_calls(message.get("tool_calls"))
    return Message(str(message.get("role", "?")), "\n".join(part for part in (text, calls) if part))


def _input_item(item: Any) -> Message:
    """An item of a Responses ``input``: a message, a tool call or its output; a plain string is the user's."""
    if not isinstance(item, Mapping):
        return Message("user", _text(item))
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        return Message(str(item.get("role", "user")), _text(item.get("content")))
    if kind == "function_call":
        return Message("assistant", _tool_call(item.get("name"), item.get("arguments")))
    if kind == "function_call_output":
        return Message("tool", _text(item.get("output")))
    return Message(str(kind), json.dumps(item, ensure_ascii=False))


def _text(content: Any) -> str:
    """A message's content as text: a string, the text of its parts (``[image]`` for a picture), else JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, Mapping) for part in content):
        return "".join(str(p["text"]) if "text" in p else f"[{str(p.get('type', 'part')).removeprefix('input_')}]"
                       for p in content)
    return json.dumps(content, ensure_ascii=False)


def _tool_calls(calls: Any) -> str:
    if not isinstance(calls, list):
        return ""
    functions = [call.get("function") or {} for call in calls if isinstance(call, Mapping)]
    return "\n".join(_tool_call(f.get("name"), f.get("arguments")) for f in functions if isinstance(f, Mapping))


def _tool_call(name: Any, arguments: Any) -> str:
    return f"[tool call] {name}({arguments if isinstance(arguments, str) else json.dumps(arguments)})"


# --- the answer ----------------------------------------------------------------------------------


def read_answer(kind: str, body: Any) -> tuple[str, str | None, bool]:
    """The answer's text, its finish reason and whether it was cut short (``length``; a Responses
    ``incomplete``). A stream (its event text) is reassembled; embeddings are described, not copied."""
    if isinstance(body, str):
        return _streamed(kind, body)
    if not isinstance(body, Mapping):
        return "", None, False
    if kind == "embeddings":
        return _embeddings(body.get("data")), None, False
    if kind == "responses":
        return _response(body)
    choice = _first(body.get("choices"))
    finish = choice.get("finish_reason")
    if kind == "completions":
        return str(choice.get("text") or ""), finish, finish == "length"
    message = choice.get("message") or {}
    text = "\n".join(p for p in (_text(message.get("content")), _tool_calls(message.get("tool_calls"))) if p)
    return text, finish, finish == "length"


def _first(items: Any) -> Mapping[str, Any]:
    return items[0] if isinstance(items, list) and items and isinstance(items[0], Mapping) else {}


def _response(body: Mapping[str, Any]) -> tuple[str, str | None, bool]:
    """A Responses API object: its output messages' text and tool calls; its status, or why it is incomplete."""
    parts = []
    for item in body.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "message":
            parts.append("".join(str(p.get("text", "")) for p in item.get("content") or []
                                 if isinstance(p, Mapping) and p.get("type") == "output_text"))
        elif item.get("type") == "function_call":
            parts.append(_tool_call(item.get("name"), item.get("arguments")))
    text = "\n".join(parts) if parts else str(body.get("output_text") or "")
    status = body.get("status")
    reason = (body.get("incomplete_details") or {}).get("reason") if status == "incomplete" else None
    return text, str(reason or status) if status else None, status == "incomplete"


def _embeddings(data: Any) -> str:
    vectors = data if isinstance(data, list) else []
    first = _first(vectors).get("embedding")
    if isinstance(first, str):  # base64 float32s, the SDK's default encoding
        try:
            dimensions = len(base64.b64decode(first)) // 4
        except (ValueError, binascii.Error):
            dimensions = 0
    else:
        dimensions = len(first) if isinstance(first, list) else 0
    return f"{len(vectors)} vector{'s' * (len(vectors) != 1)} of {dimensions} dimensions"


def _streamed(kind: str, text: str) -> tuple[str, str | None, bool]:
    """A streamed answer from its events: the Responses API's final response, or the chunks' pieces joined."""
    chunks = list(events(text))
    if kind == "responses":
        final = [e["response"] for e in chunks if e.get("type") in ("response.completed", "response.incomplete")
                 and isinstance(e.get("response"), Mapping)]
        return _response(final[-1]) if final else ("", None, False)
    choices = [_first(chunk.get("choices")) for chunk in chunks]
    finish = next((c["finish_reason"] for c in reversed(choices) if c.get("finish_reason")), None)
    if kind == "completions":
        return "".join(str(c.get("text") or "") for c in choices), finish, finish == "length"
    deltas = [c.get("delta") or {} for c in choices]
    answer = "".join(str(d.get("content") or "") for d in deltas)
    calls = _streamed_tool_calls(d.get("tool_calls") for d in deltas)
    return "\n".join(p for p in (answer, calls) if p), finish, finish == "length"


def _streamed_tool_calls(pieces: Iterable[Any]) -> str:
    """Tool calls sent in pieces (a name, then arguments in fragments, per ``index``) put back together."""
    calls: dict[int, dict[str, str]] = {}
    for piece in pieces:
        for call in piece if isinstance(piece, list) else []:
            if not isinstance(call, Mapping):
                continue
            function = call.get("function") or {}
            whole = calls.setdefault(int(call.get("index", 0)), {"name": "", "arguments": ""})
            whole["name"] += str(function.get("name") or "")
            whole["arguments"] += str(function.get("arguments") or "")
    return "\n".join(_tool_call(c["name"], c["arguments"]) for _, c in sorted(calls.items()))
