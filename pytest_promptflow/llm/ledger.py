"""What one row's LLM calls cost: calls, cache hits, tokens, money, and the calls that failed.

The engine opens a ``scope`` around every row; our call layer finds it through a context variable,
which promptflow copies into the threads it runs nodes in.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class RowCalls:
    """Counts for the LLM calls made while one row ran (nodes may call from several threads)."""

    site: str  # e.g. "flow sentiment, row 3 of dataset sentiment_easy"
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    failures: list[str] = field(default_factory=list)
    replay_misses: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answered(self, *, cached: bool, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        with self._lock:
            self.calls += 1
            self.cache_hits += cached
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cost += cost

    def failed(self, reason: str) -> None:
        with self._lock:
            self.calls += 1
            self.failures.append(reason)

    def missed(self, reason: str) -> None:
        with self._lock:
            self.replay_misses.append(reason)


_current: ContextVar[RowCalls | None] = ContextVar("pytest_promptflow_row_calls", default=None)


def current() -> RowCalls:
    """The running row's counts; calls made outside any row are counted in a throwaway."""
    return _current.get() or RowCalls("outside any row")


@contextmanager
def scope(site: str) -> Iterator[RowCalls]:
    calls = RowCalls(site)
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)
