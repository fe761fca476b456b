"""Tokens and money: the usage a response reports, priced from the user's table (per 1K tokens)."""

from __future__ import annotations

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
    """The ``usage`` block of an OpenAI-style JSON response (streams without one count zero)."""
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if not isinstance(usage, Mapping):
        return Usage()
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def cost(prices: Mapping[str, Price], models: tuple[str, ...], usage: Usage) -> float:
    """The price of ``usage`` under the first of ``models`` (deployment, then reported model) in the table."""
    for model in models:
        price = prices.get(model)
        if price:
            return (usage.prompt_tokens * price.prompt + usage.completion_tokens * price.completion) / 1000
    return 0.0
