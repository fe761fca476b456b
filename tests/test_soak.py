"""The soak (benchmarks/soak.py) in small, so CI guards it: two released runs against a flaky endpoint, the
second killed with SIGKILL, then the consistency checks and a clean run with the verdicts of a run never
interrupted. Also: the checks themselves find what they look for."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from pytest_promptflow.llm.store import Answer, CallRequest, Store

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from soak_checks import check_store, compare_verdicts  # noqa: E402

COMPLETION = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: hi"}}]}


def test_a_reduced_soak_ends_consistent_with_the_verdicts_of_an_uninterrupted_run() -> None:
    soak = subprocess.Popen([sys.executable, str(BENCHMARKS / "soak.py"), "--runs", "2", "--kill-every", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = soak.communicate(timeout=240)  # about a minute on 2 cores
    except subprocess.TimeoutExpired:
        soak.send_signal(signal.SIGINT)  # it stops what it deployed on Ctrl-C
        output, _ = soak.communicate(timeout=60)
        pytest.fail(f"the soak took more than 240 s:\n{output}")
    assert soak.returncode == 0, output
    assert re.search(r"summary: \d+ runs.*; 1 of 1 kills landed: run-02", output), output
    for checked in ("LLM store", "MLflow registry", "local deployments", "verdicts: final clean run"):
        assert f"{checked} " in output, output
    assert "PROBLEM" not in output and "result: consistent, same verdicts" in output, output


def request(text: str) -> CallRequest:
    return CallRequest("http://127.0.0.1", "chat/completions", "m", None, {"messages": [{"role": "user",
                                                                                         "content": text}]})


def test_the_store_check_finds_a_torn_entry_a_non_answer_and_a_misplaced_one(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(request("good"), Answer(200, "application/json", COMPLETION))
    store.put(request("busy"), Answer(200, "application/json", {"error": {"message": "busy"}}))
    store.put(request("torn"), Answer(200, "application/json", COMPLETION))
    torn = store.path(request("torn"))
    torn.write_text(torn.read_text()[:40])
    misplaced = store.path(request("elsewhere"))
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    misplaced.write_text(store.path(request("good")).read_text())
    (torn.parent / ".abc-123.tmp").write_text("{")

    problems = "\n".join(check_store(tmp_path).problems)
    assert "no completion (keys: error)" in problems
    assert f"{torn.relative_to(tmp_path)}: unreadable" in problems
    assert f"{misplaced.relative_to(tmp_path)}: not stored under its request's key" in problems
    assert len(check_store(tmp_path).problems) == 3  # the stray .tmp is no problem: the store never reads it


@pytest.mark.parametrize(("change", "differs"), [
    (lambda cell: None, None),
    (lambda cell: cell["items"][0].update(outcome="failed"), "items differ"),
    (lambda cell: cell["metrics"].update(accuracy=0.5), "metrics differ"),
    (lambda cell: cell["rows"][0].update(error="LLMCallFailed: gave up"), "rows differ"),
    (lambda cell: cell["metrics"].update({"latency.p95": 9.0}), None),  # timing is not a verdict
], ids=["same", "an-outcome", "a-metric", "a-row", "timing-only"])
def test_verdicts_compare_items_metrics_and_rows_but_not_timing(
        tmp_path: Path, change: Callable[[dict[str, Any]], None], differs: str | None) -> None:
    cell = {"cell": "c", "items": [{"nodeid": "e::c", "outcome": "passed"}], "metrics": {"accuracy": 1.0,
            "latency.p95": 0.1}, "rows": [{"id": "r0", "outputs": {"category": "positive"}, "error": None,
                                          "scores": {"accuracy.score": 1}}]}
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"flows": [{"cells": [cell]}]}))
    change(cell)
    final = tmp_path / "final.json"
    final.write_text(json.dumps({"flows": [{"cells": [cell]}]}))
    problems = compare_verdicts(reference, final)[0].problems
    if differs is None:
        assert problems == []
    else:
        assert len(problems) == 1 and differs in problems[0], problems
