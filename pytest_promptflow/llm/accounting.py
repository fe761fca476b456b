"""Tokens and money: the usage a response reports, priced from the user's table (per 1K tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Price:
    """Currency per 1,000 tokens."""

    prompt: float
    completion: float


def usage_of(body: Any) -> Usage:
    """The ``usage`` block of an OpenAI-style JSON response: chat and completions count
    ``prompt_tokens``/``completion_tokens``, the Responses API ``input_tokens``/``output_tokens``.
    A stream (stored as its text) counts what its events report, and zero when none does."""
    if isinstance(body, str):
        return _stream_usage(body)
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if not isinstance(usage, Mapping):
        return Usage()
    return Usage(_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
                 _count(usage.get("completion_tokens", usage.get("output_tokens"))))


def _stream_usage(text: str) -> Usage:
    """The last usage a server-sent event stream reports: a chat chunk's (sent when the request asked
    ``stream_options.include_usage``) or the response of the Responses API's ``response.completed``."""
    found = Usage()
    for line in text.splitlines():
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[len("data:"):])
        except ValueError:
            continue  # "[DONE]"
        inner = event.get("response") if isinstance(event, Mapping) else None
        usage = usage_of(inner if isinstance(inner, Mapping) else event)
        found = usage if usage != Usage() else found
    return found


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def cost(prices: Mapping[str, Price], models: tuple[str, ...], usage: Usage) -> float:
    """The price of ``usage`` under the first of ``models`` (deployment, then reported model) in the table."""
    for model in models:
        price = prices.get(model)
        if price:
            return (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1000
    return 0.0
