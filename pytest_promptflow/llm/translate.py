"""What the embedded model's front translates: Responses API requests to chat completions and the
answers back, and whole answers to server-sent event streams.

llama.cpp answers chat completions only, so ``/responses`` is served through them. A stream is
built from one whole (non-streamed) completion whose text is split into word-sized deltas: the
call layer reads every answer whole before the flow sees it, so real token streaming would gain
nothing here, and the client gets the same events, in the same order, as from OpenAI.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Iterable, Mapping

#: Responses request fields that chat completions take under another name (or the same one).
_SAME_MEANING = {"max_output_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p",
                 "seed": "seed"}
_ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat completions request that asks what the Responses request ``body`` asks.

    Raises ValueError for what the model cannot do (tools, images, unknown input items)."""
    if body.get("tools"):
        raise ValueError("the embedded model takes no tools")
    messages = [{"role": "system", "content": str(body["instructions"])}] if body.get("instructions") else []
    messages += _messages(body.get("input", ""))
    chat: dict[str, Any] = {"messages": messages}
    chat.update({chat_key: body[key] for key, chat_key in _SAME_MEANING.items() if body.get(key) is not None})
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif text_format.get("type") == "json_schema":
        schema = {k: text_format[k] for k in ("name", "schema", "strict") if k in text_format}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    return chat


def _messages(given: Any) -> list[dict[str, str]]:
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list):
        raise ValueError("input must be a string or a list of messages")
    messages = []
    for item in given:
        if not isinstance(item, Mapping) or item.get("type", "message") != "message" or item.get("role") not in _ROLES:
            kind = item.get("type") if isinstance(item, Mapping) else type(item).__name__
            raise ValueError(f"the embedded model takes only message input items, not {kind!r}")
        messages.append({"role": _ROLES[item["role"]], "content": _text(item.get("content", ""))})
    return messages


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text of its input_text/output_text parts."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    if any(not isinstance(p, Mapping) or "text" not in p for p in parts):
        raise ValueError("the embedded model takes only text content parts")
    return "".join(str(p["text"]) for p in parts)


def response_object(body: Mapping[str, Any], chat: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Responses API object for the chat completion ``chat`` that answered request ``body``."""
    text = str(((chat.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
    usage = chat.get("usage") or {}
    tokens_in, tokens_out = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "status": "completed", "model": model, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "previous_response_id": body.get("previous_response_id"), "metadata": body.get("metadata") or {},
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "output": [_message_item(text)],
        "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    }


def _message_item(text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": status, "role": "assistant",
            "content": content}


def response_events(response: Mapping[str, Any]) -> str:
    """The server-sent events a streamed ``/responses`` call gets for the finished ``response``."""
    item = response["output"][0]
    text = item["content"][0]["text"]
    started = {**response, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": text, "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "status": "in_progress",
                                                                          "content": []}},
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
        *({"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []} for delta in deltas(text)),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response},
    ]
    return _sse((event["type"], {**event, "sequence_number": number}) for number, event in enumerate(events))


def chat_events(chat: Mapping[str, Any], include_usage: bool) -> str:
    """The ``chat.completion.chunk`` events of a streamed chat completion for the whole answer ``chat``."""
    choice = (chat.get("choices") or [{}])[0]
    text = str((choice.get("message") or {}).get("content") or "")
    head = {"id": chat.get("id") or f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": chat.get("created") or int(time.time()), "model": chat.get("model")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": d}) for d in deltas(text)),
              chunk({}, choice.get("finish_reason") or "stop")]
    if include_usage:
        chunks.append({**head, "choices": [], "usage": chat.get("usage")})
    return _sse((None, c) for c in chunks) + "data: [DONE]\n\n"


def deltas(text: str) -> list[str]:
    """``text`` in word-sized pieces (each word with the spaces after it) that join back to it."""
    return re.findall(r"\S+\s*|\s+", text)


def _sse(events: Iterable[tuple[str | None, Mapping[str, Any]]]) -> str:
    """Events as ``text/event-stream`` text: an ``event:`` line when named, a ``data:`` line, a blank line."""
    text = []
    for name, data in events:
        if name:
            text.append(f"event: {name}\n")
        text.append(f"data: {json.dumps(data)}\n\n")
    return "".join(text)
