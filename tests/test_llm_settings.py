"""Retry timing, limits, prices and their ini lines (pure parts)."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import run

from pytest_promptflow.llm import limits
from pytest_promptflow.llm.accounting import Price, Usage, cost, usage_of
from pytest_promptflow.llm.limits import Gate, Limit
from pytest_promptflow.llm.retry import RetryPolicy, retry_after, should_retry
from pytest_promptflow.llm.settings import parse_limits, parse_prices


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff=1.0, max_backoff=8.0)
    for retry, step in enumerate([1, 2, 4, 8, 8]):
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1
    assert policy.delay(3, retry_after=0.25) == 0.25


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ({"Retry-After": "Sat, 28 Nov 2026 10:00:10 GMT"}, 10.0),
    ({"Retry-After": "soon"}, None),
    ({"Retry-After": "600"}, None),
    ({}, None),
])
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    now = 1795860000.0  # Sat, 28 Nov 2026 10:00:00 GMT
    assert retry_after(headers, now=now) == seconds


def test_which_statuses_are_retried() -> None:
    assert [s for s in (200, 400, 401, 404, 408, 422, 429, 500, 503, 529) if should_retry(s)] == [408, 429, 500, 503,
                                                                                                    529]


def test_limit_lines_and_prices() -> None:
    assert parse_limits(["aoai concurrency=4 rpm=60", "* rpm=600", "# comment"]) == {
        "aoai": Limit(4, 60), "*": Limit(None, 600)}
    assert parse_prices(["gpt-4o prompt=0.0025 completion=0.01"]) == {"gpt-4o": Price(0.0025, 0.01)}
    for bad in (["aoai"], ["aoai speed=3"], ["aoai concurrency=0"], ["aoai rpm=2.5"]):
        with pytest.raises(ValueError, match="promptflow_llm_limits"):
            parse_limits(bad)
    with pytest.raises(ValueError, match="prices cannot be negative"):
        parse_prices(["m prompt=-1"])


def test_a_bad_ini_line_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\npromptflow_llm_limits = aoai concurrency=many\n")
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester)
    result.stderr.fnmatch_lines(["*pytest-promptflow: promptflow_llm_limits: 'aoai concurrency=many': cannot read*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_cost_uses_the_deployment_then_the_reported_model() -> None:
    prices = {"gpt-4o": Price(prompt=2.0, completion=10.0)}
    usage = usage_of({"usage": {"prompt_tokens": 500, "completion_tokens": 100}})
    assert usage == Usage(500, 100)
    assert cost(prices, ("my-deployment", "gpt-4o"), usage) == pytest.approx(2.0)
    assert cost(prices, ("other",), usage) == 0.0
    assert usage_of({"usage": {"prompt_tokens": "x"}}) == Usage(0, 0)


def test_a_gate_keeps_calls_in_flight_within_the_concurrency_limit() -> None:
    gate = Gate(Limit(concurrency=2))
    in_flight, peak, lock = 0, 0, threading.Lock()

    def call() -> None:
        nonlocal in_flight, peak
        with gate.slot():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2


def test_a_gate_starts_at_most_rpm_calls_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "WINDOW", 0.3)
    gate = Gate(Limit(rpm=3))
    starts = []
    for _ in range(7):
        with gate.slot():
            starts.append(time.monotonic())
    for i in range(3, 7):
        assert starts[i] - starts[i - 3] >= 0.3 - 0.01


def test_xdist_workers_share_a_limit() -> None:
    assert Limit(4, 60).share(2) == Limit(2, 30)
    assert Limit(1, None).share(4) == Limit(1, None)
