"""What one row's LLM calls cost (calls, cache hits, tokens, money, the calls that failed) and what they
said: each call's transcript entry, in the order the calls ended.

The engine opens a ``scope`` around every row (and repeat of a row); our call layer finds it through a
context variable, which promptflow copies into the threads it runs nodes in.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

from .transcript import LLMCall


@dataclass
class RowCalls:
    """Counts for the LLM calls made while one row ran (nodes may call from several threads)."""

    site: str  # e.g. "flow sentiment, row 3 of dataset sentiment_easy"
    #: which of a row's repeated runs this is: from 1 on, its LLM calls are stored under keys of their own
    repeat: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    failures: list[str] = field(default_factory=list)
    replay_misses: list[str] = field(default_factory=list)
    transcript: list[LLMCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answered(self, *, cached: bool, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        with self._lock:
            self.llm_calls += 1
            self.cache_hits += cached
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.cost += cost

    def failed(self, reason: str) -> None:
        with self._lock:
            self.llm_calls += 1
            self.failures.append(reason)

    def missed(self, reason: str) -> None:
        with self._lock:
            self.replay_misses.append(reason)

    def keep(self, call: LLMCall) -> None:
        """Adds a call, answered or not, to the row's transcript."""
        with self._lock:
            self.transcript.append(call)


class Counted(Protocol):
    """Anything that carries a row's call counts: ``RowCalls`` while it runs, ``engine.Row`` after."""

    @property
    def llm_calls(self) -> int: ...
    @property
    def cache_hits(self) -> int: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cost(self) -> float: ...


def spend(rows: Sequence[Counted]) -> dict[str, float]:
    """The metrics of several rows' calls: counts, tokens and cost."""
    prompt = sum(r.prompt_tokens for r in rows)
    completion = sum(r.completion_tokens for r in rows)
    return {"llm.calls": float(sum(r.llm_calls for r in rows)),
            "llm.cache_hits": float(sum(r.cache_hits for r in rows)),
            "tokens.prompt": float(prompt), "tokens.completion": float(completion),
            "tokens.total": float(prompt + completion), "cost.total": sum(r.cost for r in rows)}


_current: ContextVar[RowCalls | None] = ContextVar("pytest_promptflow_row_calls", default=None)


def current() -> RowCalls:
    """The running row's counts; calls made outside any row are counted in a throwaway."""
    return _current.get() or RowCalls("outside any row")


@contextmanager
def scope(site: str, repeat: int = 0) -> Iterator[RowCalls]:
    calls = RowCalls(site, repeat)
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)


@contextmanager
def enter(calls: RowCalls) -> Iterator[RowCalls]:
    """Counts this thread's calls against a row already running elsewhere: the LLM proxy answers a workflow
    worker's calls on its own threads, for the row that waits on that worker."""
    token = _current.set(calls)
    try:
        yield calls
    finally:
        _current.reset(token)
