"""Under ``-n 2`` each cell runs once however many tests use it, the collection header shows, and a shard's
deselected items are counted (issue 16, item 2). Real pytest-xdist workers, in a subprocess."""

from __future__ import annotations

import collections

import pytest
from conftest import Project, jsonl, outcomes

#: Two callable flows on two datasets: four cells, each used by three tests. Every row a flow runs is a line
#: ``pid flow text`` in runs.log, so a cell run twice shows as its rows twice.
SUITE = """
import os
from pathlib import Path

import pytest

LOG = Path(__file__).with_name("runs.log")

def _log(flow, text):
    with LOG.open("a") as log:
        log.write(f"{os.getpid()} {flow} {text}\\n")

def keyword(text):
    _log("keyword", text)
    return {"category": "positive" if "good" in text else "negative"}

def upbeat(text):
    _log("upbeat", text)
    return {"category": "positive"}

ARGS = dict(data=["data/small.jsonl", "data/hard.jsonl"])

@pytest.mark.promptflow(flow=keyword, **ARGS)
def test_keyword_a(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0

@pytest.mark.promptflow(flow=upbeat, **ARGS)
def test_upbeat_a(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0

@pytest.mark.promptflow(flow=keyword, **ARGS)
def test_keyword_b(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0

@pytest.mark.promptflow(flow=upbeat, **ARGS)
def test_upbeat_b(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0

@pytest.mark.promptflow(flow=keyword, **ARGS)
def test_keyword_c(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0

@pytest.mark.promptflow(flow=upbeat, **ARGS)
def test_upbeat_c(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0

def test_plain():
    assert True
"""
SMALL = [{"text": f"a good day {i}", "label": "positive"} for i in range(3)]
HARD = [{"text": f"a grey day {i}", "label": "negative"} for i in range(2)]


@pytest.fixture
def suite(project: Project, pytester: pytest.Pytester) -> pytest.Pytester:
    project.write("data/small.jsonl", jsonl(SMALL))
    project.write("data/hard.jsonl", jsonl(HARD))
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def _parallel(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", *args)


def _rows_run(pytester: pytest.Pytester) -> collections.Counter[tuple[str, str]]:
    """(flow, row text) -> how many times a flow ran that row, over every worker."""
    lines = (pytester.path / "runs.log").read_text().splitlines()
    return collections.Counter(tuple(line.split(" ", 2)[1:]) for line in lines)  # type: ignore[misc]


def test_each_cell_runs_once_under_two_workers_and_the_header_shows(suite: pytest.Pytester) -> None:
    result = _parallel(suite)
    assert outcomes(result) == {"passed": 13}
    runs = _rows_run(suite)
    expected = {(flow, row["text"]) for flow in ("keyword", "upbeat") for row in SMALL + HARD}
    assert set(runs) == expected
    assert set(runs.values()) == {1}, [row for row, count in runs.items() if count > 1]
    result.stdout.fnmatch_lines(["promptflow: 4 cells, 4 rows at a time per cell",
                                 "promptflow: LLM calls: cache mode*"])


def test_a_shard_under_two_workers_runs_its_cells_once_and_counts_the_deselected(suite: pytest.Pytester) -> None:
    result = _parallel(suite, "--promptflow-shard", "1/2")
    result.stdout.fnmatch_lines(["promptflow: shard 1/2: 2 of 4 cells (round-robin over sorted cell ids)",
                                 "promptflow: 2 cells, *"])
    assert outcomes(result) == {"passed": 7, "deselected": 6}  # 2 cells x 3 tests and the plain test; 2 x 3 not
    runs = _rows_run(suite)
    assert set(runs.values()) == {1}
    # round-robin over the sorted units: keyword-hard, upbeat-hard and the plain test are shard 1's
    assert set(runs) == {(flow, row["text"]) for flow in ("keyword", "upbeat") for row in HARD}
