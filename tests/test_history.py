"""The report folder's history (issue 14, item 6): a run of a subset merges into report.json by cell and
leaves the other cells, marked with the run they come from; runs/<run id>/ keeps each run's document;
``pytest-promptflow compare`` shows what changed between two runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import HARD, Project, jsonl, outcomes, run

from pytest_promptflow import cli
from pytest_promptflow.reporting.history import KEEP_RUNS, known_runs, merged, prune

#: Two callable flows on two datasets. keyword's word comes from word.txt, so a second run can change its answers.
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
    flow_run.evaluate(exact, mapping=MAPPING)

@pytest.mark.promptflow(flow=upbeat, data=["data/small.jsonl", "data/hard.jsonl"])
def test_upbeat(flow_run):
    flow_run.evaluate(exact, mapping=MAPPING)
"""


def _suite(project: Project, pytester: pytest.Pytester) -> Path:
    project.data("small")
    project.data("hard", HARD)
    project.write("word.txt", "good\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester.path / "out"


def _report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _cells(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cell["cell"]: cell for flow in document["flows"] for cell in flow["cells"]}


def test_a_subset_run_keeps_the_other_cells_marked_and_compare_shows_the_change(
        project: Project, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _suite(project, pytester)
    first = run(pytester, "--promptflow-report", "out")
    assert outcomes(first) == {"passed": 4}
    run_a = _report(folder)["environment"]["run_id"]
    project.write("word.txt", "day\n")  # keyword now misses "good food", gets "a bad day" wrong
    second = run(pytester, "--promptflow-report", "out", "-k", "keyword")
    assert outcomes(second) == {"passed": 2, "deselected": 2}
    report = _report(folder)
    run_b = report["environment"]["run_id"]
    assert run_b != run_a
    assert [flow["flow"] for flow in report["flows"]] == ["keyword", "upbeat"]  # every flow, not only the subset
    cells = _cells(report)
    assert {name: cell["origin"]["run_id"] for name, cell in cells.items()} == {
        "keyword-small": run_b, "keyword-hard": run_b, "upbeat-small": run_a, "upbeat-hard": run_a}
    kept = cells["upbeat-small"]["kept"]
    assert kept.startswith(f"kept from run {run_a} (") and "kept" not in cells["keyword-small"]
    assert not any("stale" in cell for cell in cells.values())
    assert cells["keyword-small"]["metrics"]["match"] == 0.5 and cells["upbeat-small"]["metrics"]["match"] == 0.5
    second.stdout.fnmatch_lines([f"promptflow: report.json keeps 2 cells this run did not run, {kept}: upbeat 2"])
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert page.count(kept) == 2  # both kept cells say where they come from
    experiments = (folder / "experiments.csv").read_text(encoding="utf-8")
    assert experiments.count(run_a) == 2 and experiments.count(run_b) == 2
    # each run's own document: only its cells
    runs = {path.name: _cells(json.loads((path / "report.json").read_text())) for path in known_runs(folder / "runs")}
    assert {name: sorted(found) for name, found in runs.items()} == {
        run_a: ["keyword-hard", "keyword-small", "upbeat-hard", "upbeat-small"],
        run_b: ["keyword-hard", "keyword-small"]}

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(pytester.path)
        assert cli.main(["compare", run_a[:6], run_b, "--report-dir", "out"]) == 0
    out = capsys.readouterr().out.splitlines()
    at = out.index("cell keyword-small: passed")
    assert out[at + 2].split()[:4] == ["match", "1", "0.5", "-0.5"]  # A, B and the change
    assert out[at + 2].endswith("]")  # the paired interval of the difference
    # "a bad day" (row 1) and "good food" (row 2) now answered wrong
    assert "  flipped rows (2): row 1 exact.match 1 -> 0; row 2 exact.match 1 -> 0" in out[at:]
    assert "only in A (2): upbeat-hard, upbeat-small" in out  # run B's own document has keyword's cells only
    html = (folder / "compare.html").read_text(encoding="utf-8")
    assert "keyword-small" in html and "<script" not in html and "default-src 'none'" in html
    with pytest.MonkeyPatch.context() as patch:  # B: the merged report of the folder, its upbeat cells kept
        patch.chdir(pytester.path)
        assert cli.main(["compare", str(folder / "runs" / run_a / "report.json"), "out"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "unchanged but for latency (2): upbeat-hard, upbeat-small" in out and "cell keyword-small: passed" in out


def test_a_bad_run_id_is_one_line_naming_the_known_runs(
        project: Project, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _suite(project, pytester)
    assert outcomes(run(pytester, "--promptflow-report", "out", "-k", "upbeat")) == {"passed": 2, "deselected": 2}
    known = _report(folder)["environment"]["run_id"]
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(pytester.path)
        assert cli.main(["compare", "nosuchrun", known, "--report-dir", "out"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [f"pytest-promptflow: error: no run 'nosuchrun' in {Path('out') / 'runs'}; "
                                         f"known runs, newest first: {known}"]


def _cell(name: str, dataset: Path, value: float, run_id: str = "") -> dict[str, Any]:
    from pytest_promptflow.reporting.records import file_hash

    cell = {"flow": "f", "cell": name, "config": name, "variants": {}, "default": True, "overrides": {},
            "init": {}, "dataset": dataset.stem, "dataset_path": str(dataset), "dataset_hash": file_hash(dataset),
            "items": [{"nodeid": f"t.py::{name}", "outcome": "passed"}], "verdicts": [], "metrics": {"acc": value},
            "intervals": {}, "repeats": 1, "rows": [], "flaky": [], "outcome": "passed"}
    return {**cell, "origin": {"run_id": run_id}} if run_id else cell


def _document(run_id: str, *cells: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 2, "environment": {"run_id": run_id, "git_commit": "abcdef123456", "time": "t"},
            "flows": [{"flow": "f", "primary_metric": "acc", "best": None, "best_reason": "", "cells": list(cells)}]}


def test_a_flow_keeps_its_variants_through_merges(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))
    variants = {"ask": {"v0": {"source": "ask.jinja2", "template": "Say {{x}}", "parameters": {}, "default": True}}}
    previous = {**_document("old", _cell("a", data, 0.9))}
    previous["flows"][0]["variants"] = variants
    current = _document("new", _cell("b", data, 0.4))
    current["flows"][0]["variants"] = variants
    assert merged(previous, current, {})["flows"][0]["variants"] == variants  # a kept cell's flow too
    current["flows"][0]["flow"] = "g"
    for cell in current["flows"][0]["cells"]:
        cell["flow"] = "g"
    report = merged(previous, current, {})
    assert {flow["flow"]: flow["variants"] for flow in report["flows"]} == {"f": variants, "g": variants}


def test_a_kept_cell_whose_dataset_changed_is_stale_and_not_chosen(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))
    previous = _document("old", _cell("a", data, 0.9), _cell("b", data, 0.5))
    data.write_text(jsonl(HARD[:1]))  # the data changed since that run
    report = merged(previous, _document("new", _cell("b", data, 0.4)), {})
    cells = {cell["cell"]: cell for cell in report["flows"][0]["cells"]}
    assert cells["a"]["stale"].startswith(f"stale: its dataset {data} changed since (sha256 ")
    assert cells["a"]["kept"] == "kept from run old (commit abcdef1, t)"
    assert "kept" not in cells["b"] and cells["b"]["origin"]["run_id"] == "new"
    assert report["flows"][0]["best"] == "b"  # a's 0.9 was on other data: not chosen
    data.unlink()
    again = merged(report, _document("newer", _cell("c", tmp_path / "c.jsonl", 0.1)), {})
    assert {cell["cell"]: cell.get("stale", "")[:30] for cell in again["flows"][0]["cells"]} == {
        "a": "stale: its dataset " + str(data)[:11], "b": "stale: its dataset " + str(data)[:11], "c": ""}


def test_the_runs_folder_keeps_the_newest_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for i in range(KEEP_RUNS + 3):
        (runs / f"run{i:02}").mkdir(parents=True)
        (runs / f"run{i:02}" / "report.json").write_text("{}")
        os.utime(runs / f"run{i:02}" / "report.json", ns=(i * 10**9, i * 10**9))
    deleted = prune(runs, KEEP_RUNS)
    assert sorted(path.name for path in deleted) == ["run00", "run01", "run02"]
    assert sorted(path.name for path in runs.iterdir()) == [f"run{i:02}" for i in range(3, KEEP_RUNS + 3)]


#: Each process takes 3 s to write its report files, so both read the folder before either has written.
SLOW_WRITER = """
import time

import pytest_promptflow.reporting.files as files

ORIGINAL = files.write_reports


def write_reports(document, folder):
    time.sleep(3)
    return ORIGINAL(document, folder)


files.write_reports = write_reports
"""


def test_two_pytest_processes_writing_one_folder_keep_both_runs_cells(
        project: Project, pytester: pytest.Pytester) -> None:
    folder = _suite(project, pytester)
    pytester.makeconftest(SLOW_WRITER)
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])}
    environ.pop("PYTEST_ADDOPTS", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--promptflow-report", "out", "-k"]
    processes = [subprocess.Popen([*command, name], cwd=pytester.path, env=environ, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for name in ("keyword", "upbeat")]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
    report = _report(folder)  # whole JSON, whichever process wrote last
    assert sorted(_cells(report)) == ["keyword-hard", "keyword-small", "upbeat-hard", "upbeat-small"]
    assert len(known_runs(folder / "runs")) == 2
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("previous, said", [
    ('{"schema_version": 2, "flo', "could not be read (Unterminated string"),
    ('{"version": 1, "flows": []}', "is not a schema_version 2 report"),
    ('{"schema_version": 2, "flows": [{"flow": "f", "cells": [{"cell": "x"}]}]}',
     "could not be merged (KeyError: 'items')"),
])
def test_a_broken_previous_report_is_replaced_saying_so(tmp_path: Path, previous: str, said: str) -> None:
    from pytest_promptflow.reporting.history import write_history

    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.json").write_text(previous)
    lines = write_history(_document("new", _cell("b", data, 0.4)), folder, {})
    assert len(lines) == 1 and lines[0].startswith(f"promptflow: {folder / 'report.json'} ") and said in lines[0]
    assert [cell["cell"] for cell in _cells(_report(folder)).values()] == ["b"]
    assert (folder / "runs" / "new" / "report.json").is_file() and (folder / "report.html").is_file()


def test_own_cells_leave_out_the_kept_ones(tmp_path: Path) -> None:
    from pytest_promptflow.reporting.history import own_cells

    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))
    report = merged(_document("old", _cell("a", data, 0.9)), _document("new", _cell("b", data, 0.4)), {})
    assert [cell["cell"] for cell in _cells(report).values()] == ["a", "b"]
    assert [cell["cell"] for cell in _cells(own_cells(report)).values()] == ["b"]


def test_a_release_after_a_subset_run_uses_only_its_own_cells_and_says_so(
        project: Project, pytester: pytest.Pytester) -> None:
    _suite(project, pytester)
    assert outcomes(run(pytester, "--promptflow-report", "out")) == {"passed": 4}
    result = run(pytester, "--promptflow-report", "out", "-k", "keyword", "--promptflow-release",
                 "--promptflow-target", "none")
    assert outcomes(result) == {"passed": 2, "deselected": 2}
    released = [line for line in result.outlines if line.startswith("promptflow release: ")]
    assert released == [
        "promptflow release: keyword: not released: flow keyword is a Python callable: only flow folders and files "
        "are registered",
        "promptflow release: upbeat: not released: none of its items ran in this session (a release uses only the "
        "cells its own session ran)"]
    assert sorted(_cells(_report(pytester.path / "out"))) == [  # though the report folder keeps upbeat's cells
        "keyword-hard", "keyword-small", "upbeat-hard", "upbeat-small"]


def test_a_kept_cell_whose_flow_files_changed_is_stale(tmp_path: Path) -> None:
    from pytest_promptflow.reporting.history import flow_hash

    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))
    flow = tmp_path / "flows" / "clf"
    (flow / "__pycache__").mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text("nodes: []\n")
    (flow / "classify.py").write_text("WORD = 'good'\n")
    kept = {**_cell("a", data, 0.9), "flow_source": str(flow / "flow.dag.yaml")}
    previous = _document("old", {**kept, "flow_hash": flow_hash(kept["flow_source"])})
    (flow / "__pycache__" / "classify.cpython-311.pyc").write_bytes(b"litter a run leaves")
    assert "stale" not in merged(previous, _document("new", _cell("b", data, 0.4)), {})["flows"][0]["cells"][0]
    (flow / "classify.py").write_text("WORD = 'day'\n")
    cell = merged(previous, _document("new", _cell("b", data, 0.4)), {})["flows"][0]["cells"][-1]
    assert (cell["cell"], cell["stale"]) == ("a", f"stale: its flow {flow / 'flow.dag.yaml'} changed since")


def test_a_stale_cell_whose_data_is_back_is_no_longer_stale(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))
    previous = _document("old", _cell("a", data, 0.9))
    data.write_text(jsonl(HARD[:1]))
    report = merged(previous, _document("new", _cell("b", data, 0.4)), {})
    assert "stale" in _cells(report)["a"]
    data.write_text(jsonl(HARD))  # the data as cell a ran on it
    again = merged(report, _document("newer", _cell("b", data, 0.4)), {})
    assert "stale" not in _cells(again)["a"] and again["flows"][0]["best"] == "a"


def test_the_compare_page_escapes_what_the_data_holds(tmp_path: Path) -> None:
    from pytest_promptflow.reporting.compare import compare_documents, compare_html

    data = tmp_path / "d.jsonl"
    data.write_text(jsonl(HARD))

    def cell(score: int) -> dict[str, Any]:
        row = {"index": 0, "id": "<script>alert(1)</script>", "scores": {"ev.ok": score}, "error": None,
               "outputs": {}, "repeat": 0}
        return {**_cell("<b>c</b>", data, float(score)), "rows": [row]}

    page = compare_html(compare_documents(_document("a", cell(1)), _document("b", cell(0)), "A <i>", "B"))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>c</b>" not in page and "&lt;b&gt;c&lt;/b&gt;" in page and "A &lt;i&gt;" in page
