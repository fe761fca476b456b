"""Whether an HTTP 200 body is an answer of its endpoint's kind, so the store keeps and replays only those.

A proxy's error page or an error object sent with status 200 is no completion: stored, it would fail
its rows from the store long after the provider recovered. Streams (stored as their event-stream
text) count when their events carry what the kind's chunks carry.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

#: per endpoint kind: the list a whole answer holds and the key each of its items has
_ITEMS = {"chat/completions": ("choices", "message"), "completions": ("choices", "text"),
          "embeddings": ("data", "embedding")}
#: per endpoint kind: the key a streamed chunk's choices have
_CHUNK_KEY = {"chat/completions": "delta", "completions": "text"}


def problem(kind: str, body: Any) -> str | None:
    """What makes ``body`` no answer of endpoint ``kind`` (e.g. ``no completion (keys: error)``), None if it is one."""
    if isinstance(body, str):
        return None if _stream_answers(kind, body) else f"no {_noun(kind)} (text that is no answer stream)"
    if not isinstance(body, Mapping):
        return f"no {_noun(kind)} (a JSON {type(body).__name__}, not an object)"
    if _whole_answers(kind, body):
        return None
    return f"no {_noun(kind)} (keys: {', '.join(sorted(map(str, body))) or 'none'})"


def _whole_answers(kind: str, body: Mapping[str, Any]) -> bool:
    if kind == "responses":
        return isinstance(body.get("output"), list) or isinstance(body.get("output_text"), str)
    field, key = _ITEMS.get(kind, ("choices", "message"))
    return _items_with(body.get(field), key)


def _items_with(items: Any, key: str) -> bool:
    """A non-empty list of objects that each have ``key``."""
    return isinstance(items, list) and bool(items) and all(isinstance(i, Mapping) and key in i for i in items)


def _stream_answers(kind: str, text: str) -> bool:
    """A server-sent event stream that carries the answer: for the Responses API a ``response.completed``
    event, for chat and legacy completions a chunk whose choices have a delta (chat) or text."""
    sent = list(events(text))
    if kind == "responses":
        return any(event.get("type") == "response.completed" for event in sent)
    key = _CHUNK_KEY.get(kind)
    return key is not None and not any("error" in e for e in sent) and any(
        _items_with(event.get("choices"), key) for event in sent)


def events(text: str) -> Iterator[Mapping[str, Any]]:
    """The JSON objects of a server-sent event stream's ``data:`` lines (``[DONE]`` and the like skipped)."""
    for line in text.splitlines():
        if line.startswith("data:"):
            try:
                event = json.loads(line[len("data:"):])
            except ValueError:
                continue  # "[DONE]"
            if isinstance(event, Mapping):
                yield event


def _noun(kind: str) -> str:
    return {"embeddings": "embedding", "responses": "response output"}.get(kind, "completion")
