"""When to try an LLM call again, and how long to wait first (exponential backoff with jitter)."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Mapping

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0  # seconds: a server asking for longer is treated as a failure


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, each with ``timeout`` seconds to answer."""

    retries: int = 4
    timeout: float = 120.0
    backoff: float = 1.0  # first delay, doubled on every retry
    max_backoff: float = 30.0

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): the server's Retry-After when it
        sent one, else half the exponential step plus a random half (so callers spread out)."""
        if retry_after is not None:
            return retry_after
        step = min(self.max_backoff, self.backoff * 2**retry)
        return step / 2 + random.uniform(0, step / 2)


def should_retry(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The delay a 429 or 503 asks for: ``retry-after-ms``, or ``Retry-After`` in seconds or as a date."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            seconds = float(lowered["retry-after-ms"]) / 1000
        elif "retry-after" in lowered:
            value = lowered["retry-after"].strip()
            try:
                seconds = float(value)
            except ValueError:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - (now or time.time())
        else:
            return None
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if seconds <= MAX_RETRY_AFTER else None
