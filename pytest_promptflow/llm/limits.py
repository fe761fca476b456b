"""Per-connection limits on LLM calls: at most N in flight and at most M started per minute."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

WINDOW = 60.0


@dataclass(frozen=True)
class Limit:
    concurrency: int | None = None
    rpm: int | None = None

    def share(self, workers: int) -> Limit:
        """This process's part of the limit when ``workers`` xdist workers share a connection."""
        if workers <= 1:
            return self
        return Limit(self.concurrency and max(1, self.concurrency // workers),
                     self.rpm and max(1, self.rpm // workers))


class Gate:
    """Admits calls to one connection within its limit; sync and async callers share it."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit.concurrency) if limit.concurrency else None
        self._starts: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def _wait_for_rate(self) -> float:
        """Seconds until a call may start; 0 means it started now and was counted."""
        if not self.limit.rpm:
            return 0.0
        with self._lock:
            now = time.monotonic()
            while self._starts and self._starts[0] <= now - WINDOW:
                self._starts.popleft()
            if len(self._starts) < self.limit.rpm:
                self._starts.append(now)
                return 0.0
            return self._starts[0] + WINDOW - now

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self._slots:
            self._slots.acquire()
        try:
            while (wait := self._wait_for_rate()) > 0:
                time.sleep(wait)
            yield
        finally:
            if self._slots:
                self._slots.release()

    @asynccontextmanager
    async def async_slot(self) -> AsyncIterator[None]:
        if self._slots:
            while not self._slots.acquire(blocking=False):
                await asyncio.sleep(0.01)
        try:
            while (wait := self._wait_for_rate()) > 0:
                await asyncio.sleep(wait)
            yield
        finally:
            if self._slots:
                self._slots.release()
