"""How LLM calls are handled in a session: cache mode, store folder, retries, limits and prices.

Parsed from options and ini lines; a bad value raises ValueError with the fix, which the plugin
shows as a usage error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .accounting import Price
from .limits import Limit
from .retry import RetryPolicy

MODES = {
    "cache": "answer from the store, call the model on a miss and store the answer",
    "replay": "answer only from the store, a miss fails the test: for CI",
    "record": "call the model once per request per run and store the fresh answer",
    "live": "always call the model, store nothing",
}
ANY_CONNECTION = "*"


@dataclass(frozen=True)
class LLMSettings:
    mode: str = "cache"
    store: Path = Path(".promptflow-llm")
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: Mapping[str, Limit] = field(default_factory=dict)
    prices: Mapping[str, Price] = field(default_factory=dict)

    def limit(self, connection: str) -> Limit:
        return self.limits.get(connection) or self.limits.get(ANY_CONNECTION) or Limit()


def parse_mode(text: str) -> str:
    if text not in MODES:
        raise ValueError(f"{text!r} is not an LLM mode; use one of: {', '.join(MODES)}")
    return text


def parse_limits(lines: Iterable[str]) -> dict[str, Limit]:
    """Lines like ``aoai concurrency=4 rpm=60`` (``*`` for every connection)."""
    limits = {}
    for line in _lines(lines):
        name, values = _named_values(line, "promptflow_llm_limits", "aoai concurrency=4 rpm=60",
                                     ("concurrency", "rpm"))
        if any(v <= 0 or v != int(v) for v in values.values()):
            raise ValueError(f"promptflow_llm_limits: {line!r}: limits are whole numbers above 0")
        limits[name] = Limit(concurrency=_int(values.get("concurrency")), rpm=_int(values.get("rpm")))
    return limits


def parse_prices(lines: Iterable[str]) -> dict[str, Price]:
    """Lines like ``gpt-4o prompt=0.0025 completion=0.01`` (currency per 1K tokens)."""
    prices = {}
    for line in _lines(lines):
        name, values = _named_values(line, "promptflow_llm_prices", "gpt-4o prompt=0.0025 completion=0.01",
                                     ("prompt", "completion"))
        if any(v < 0 for v in values.values()):
            raise ValueError(f"promptflow_llm_prices: {line!r}: prices cannot be negative")
        prices[name] = Price(values.get("prompt", 0.0), values.get("completion", 0.0))
    return prices


def _lines(lines: Iterable[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _named_values(line: str, ini: str, example: str, keys: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    name, *pairs = line.split()
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            if not sep or key not in keys:
                raise ValueError
            values[key] = float(value)
        except ValueError:
            raise ValueError(f"{ini}: {line!r}: cannot read {pair!r}; write e.g. {example!r} "
                             f"(keys: {', '.join(keys)})") from None
    if not values:
        raise ValueError(f"{ini}: {line!r} sets nothing; write e.g. {example!r}")
    return name, values


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
