"""Shards (issue 16, item 5): ``--promptflow-shard I/N`` runs a deterministic 1/N of the cells, and
``pytest-promptflow merge`` joins the shards' reports into the document one unsharded run writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import HARD, Project, outcomes, run

from pytest_promptflow import cli

#: Two callable flows on two datasets: four cells; test_keyword_again shares keyword's cells.
SUITE = """
from pathlib import Path

import pytest

def keyword(text):
    word = Path(__file__).with_name("word.txt").read_text().strip()
    return {"category": "positive" if word in text else "negative"}

def upbeat(text):
    return {"category": "positive"}

def exact(prediction, label):
    return {"match": float(prediction == label)}

MAPPING = {"prediction": "${run.outputs.category}", "label": "${data.label}"}

@pytest.mark.promptflow(flow=keyword, data=["data/small.jsonl", "data/hard.jsonl"])
def test_keyword(flow_run):
    assert flow_run.evaluate(exact, mapping=MAPPING).metrics["match"] >= 0.5

@pytest.mark.promptflow(flow=keyword, data=["data/small.jsonl", "data/hard.jsonl"])
def test_keyword_again(flow_run):
    assert flow_run.evaluate(exact, mapping=MAPPING).metrics["match"] <= 1.0

@pytest.mark.promptflow(flow=upbeat, data=["data/small.jsonl", "data/hard.jsonl"])
def test_upbeat(flow_run):
    assert flow_run.evaluate(exact, mapping=MAPPING).metrics["match"] >= 0.5
"""
CELLS = {"keyword-hard", "keyword-small", "upbeat-hard", "upbeat-small"}


@pytest.fixture
def suite(project: Project, pytester: pytest.Pytester) -> pytest.Pytester:
    project.data("small")
    project.data("hard", HARD)
    project.write("word.txt", "good\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def _cells(folder: Path) -> dict[str, dict[str, Any]]:
    document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return {cell["cell"]: cell for flow in document["flows"] for cell in flow["cells"]}


def _flows(folder: Path) -> dict[str, tuple[Any, ...]]:
    document = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return {flow["flow"]: (flow["primary_metric"], flow["best"], flow["best_reason"]) for flow in document["flows"]}


def _merge(pytester: pytest.Pytester, *args: str) -> int:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(pytester.path)
        return cli.main(["merge", *args])


def test_two_shards_run_disjoint_cells_and_merge_to_the_unsharded_report(
        suite: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    assert outcomes(run(suite, "--promptflow-report", "full")) == {"passed": 6}
    shards = {}
    for number in (1, 2):
        result = run(suite, "--promptflow-shard", f"{number}/2", "--promptflow-report", f"s{number}")
        result.stdout.fnmatch_lines([f"promptflow: shard {number}/2: 2 of 4 cells (round-robin over sorted cell ids)"])
        shards[number] = _cells(suite.path / f"s{number}")
        # a cell's items stay together: keyword's shard runs both of its tests
        items = sum(len(cell["items"]) for cell in shards[number].values())
        assert outcomes(result) == {"passed": items, "deselected": 6 - items}
    assert not set(shards[1]) & set(shards[2]) and set(shards[1]) | set(shards[2]) == CELLS
    assert set(shards[1]) == {"keyword-hard", "upbeat-hard"}  # sorted ids, round-robin

    capsys.readouterr()
    assert _merge(suite, "s1", "s2", "--out", "merged") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"pytest-promptflow merge: 4 cells of 2 shard reports in {Path('merged') / 'report.json'}"]
    merged, full = _cells(suite.path / "merged"), _cells(suite.path / "full")
    assert set(merged) == CELLS
    for name, cell in full.items():
        mine = merged[name]
        assert {key: value for key, value in mine["metrics"].items() if not key.startswith("latency")} == \
            {key: value for key, value in cell["metrics"].items() if not key.startswith("latency")}
        assert mine["verdicts"] == cell["verdicts"] and mine["outcome"] == cell["outcome"] == "passed"
        assert mine["items"] == cell["items"]
        assert [row["scores"] for row in mine["rows"]] == [row["scores"] for row in cell["rows"]]
    assert _flows(suite.path / "merged") == _flows(suite.path / "full")
    assert (suite.path / "merged" / "report.html").is_file() and (suite.path / "merged" / "experiments.csv").is_file()


def test_merge_says_in_one_line_a_cell_twice_and_a_failed_shard(
        suite: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    assert outcomes(run(suite, "--promptflow-shard", "1/2", "--promptflow-report", "s1")) == {"passed": 3,
                                                                                             "deselected": 3}
    (suite.path / "word.txt").unlink()  # keyword's rows now raise: its gate fails
    assert outcomes(run(suite, "--promptflow-shard", "2/2", "--promptflow-report", "s2"))["failed"] == 2
    capsys.readouterr()
    assert _merge(suite, "s1", "s2", "s1", "--out", "merged") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"pytest-promptflow merge: shard 2/2 ({Path('s2') / 'report.json'}) failed: exit status 1"] + [
        f"pytest-promptflow merge: cell {cell} of flow {flow} is in {Path('s1') / 'report.json'} and "
        f"{Path('s1') / 'report.json'}: kept {Path('s1') / 'report.json'}'s (were the shards I/N of one N?)"
        for flow, cell in (("keyword", "keyword-hard"), ("upbeat", "upbeat-hard"))]
    assert _cells(suite.path / "merged")["keyword-small"]["outcome"] == "failed"


@pytest.mark.parametrize("value", ["3/2", "0/2", "x"])
def test_a_bad_shard_is_one_usage_line(suite: pytest.Pytester, value: str) -> None:
    result = run(suite, "--promptflow-shard", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        f"ERROR: pytest-promptflow: --promptflow-shard {value!r} is no shard; write I/N with 1 <= I <= N, e.g. 1/2"]
