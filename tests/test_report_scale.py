"""Reports of a cell with many rows: the page stays small and shows what went wrong, the CSV and report.json
keep every row, and writing them holds no second copy of the rows."""

from __future__ import annotations

import csv
import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, outcomes, run

from pytest_promptflow.reporting.csv_files import write_csv
from pytest_promptflow.reporting.html import HTML_ROWS_PER_CELL
from pytest_promptflow.reporting.records import merge
from pytest_promptflow.scrub import scrub, write_json

ROWS = 5_000
FAILING = (1_234, 3_999, 4_998)  # all beyond the first HTML_ROWS_PER_CELL rows
PAGE_BOUND = 1_000_000  # bytes: 500 rows of a small flow are about 200 KB; 5,000 would be ten times that

SUITE = f"""
    import pytest

    def count(text):
        return {{"words": len(text.split())}}

    def judge(words, index):
        return {{"ok": float(index not in {FAILING!r})}}

    @pytest.mark.promptflow(flow=count, data="data/many.jsonl")
    def test_many(flow_run):
        result = flow_run.evaluate(judge, mapping={{"words": "${{run.outputs.words}}", "index": "${{data.index}}"}})
        assert result.metrics["ok"] >= 0.99
"""


def test_a_cell_of_5000_rows_gives_a_small_page_with_its_failing_rows_and_a_whole_csv(project: Project) -> None:
    project.data("many", [{"index": i, "text": f"row {i} " + "word " * (i % 7)} for i in range(ROWS)])
    project.pytester.makepyfile(test_many=SUITE)
    result = run(project.pytester, "--promptflow-report", "reports")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()

    reports = project.path / "reports"
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) < PAGE_BOUND
    assert (f"The page shows {HTML_ROWS_PER_CELL:,} of {ROWS:,} rows: all {len(FAILING)} failing ones, then the first "
            f"others; {ROWS - HTML_ROWS_PER_CELL:,} rows are not shown; every row is in rows.csv") in page
    shown = [int(index) for index in re.findall(r'<tr class="row(?: failing)?">\s*<td class="num">(\d+)</td>', page)]
    assert shown == sorted([*range(HTML_ROWS_PER_CELL - len(FAILING)), *FAILING])  # failing first, in row order
    assert page.count('<tr class="row failing">') == len(FAILING)

    with (reports / "rows.csv").open(encoding="utf-8", newline="") as file:
        table = list(csv.DictReader(file))
    assert [int(line["index"]) for line in table] == list(range(ROWS))
    assert [int(line["data.index"]) for line in table if line["judge.ok"] == "0.0"] == list(FAILING)
    document = json.loads((reports / "report.json").read_text(encoding="utf-8"))
    assert len(document["flows"][0]["cells"][0]["rows"]) == ROWS


def _record(rows: int) -> dict[str, Any]:
    """An item's record as the reports get it (only the fields they read)."""
    return {"flow": "f", "flow_source": "", "cell": "f-defaults-d", "config": "defaults", "variants": {},
            "default": True, "overrides": {}, "init": {}, "dataset": "d", "dataset_path": "d.jsonl",
            "dataset_hash": "", "items": [{"nodeid": "t.py::test[f-defaults-d]", "outcome": "passed"}],
            "verdicts": [], "metrics": {"rows": float(rows), "error_rate": 0.0}, "aliases": {}, "intervals": {},
            "repeats": 1, "flaky": [], "flow_variants": {}, "parity": None,
            "rows": [{"index": i, "id": str(i), "repeat": 0, "data": {"text": f"text of row {i} " * 8},
                      "inputs": {"text": f"text of row {i} " * 8}, "outputs": {"n": i}, "error": None,
                      "latency": 0.001, "cached": False, "llm_calls": 0, "tokens": 0, "cost": 0.0,
                      "scores": {}, "calls": []} for i in range(rows)]}


def test_the_document_shares_the_records_rows_and_scrub_copies_only_what_it_changes() -> None:
    record = _record(3)
    document = merge([scrub(record)], {}, {})
    assert document["flows"][0]["cells"][0]["rows"][0] is record["rows"][0]  # one copy of the rows, not two
    assert scrub(document) is document
    secret = "sk-abcdefghijklmnop"
    record["rows"][1]["data"]["key"] = secret
    scrubbed = scrub(record, (secret,))
    assert scrubbed["rows"][1]["data"]["key"] == "***" and record["rows"][1]["data"]["key"] == secret
    assert scrubbed["rows"][0] is record["rows"][0]


def test_writing_report_json_and_the_csv_of_4000_rows_holds_no_copy_of_them(tmp_path: Path) -> None:
    """The rows once in memory: report.json and rows.csv are written in pieces, from the document itself (the
    page, bounded, is the test above's)."""
    document = merge([_record(4_000)], {}, {})
    write_csv(merge([_record(1)], {}, {}), tmp_path / "warm")  # imports outside the measure
    tracemalloc.start()
    try:
        write_json(tmp_path / "report.json", document, indent=1)
        write_csv(document, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = (tmp_path / "report.json").stat().st_size + (tmp_path / "rows.csv").stat().st_size
    assert peak < written / 4, (peak, written)  # a copy of the rows, or either file as one string, is more
    assert len(json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["flows"][0]["cells"][0]["rows"]) \
        == 4_000


@pytest.mark.parametrize("failing", [0, 7, 600])
def test_the_page_says_which_rows_it_shows(failing: int) -> None:
    from pytest_promptflow.reporting.html import rows_note, shown_rows

    rows = [{"index": i} for i in range(2_000)]
    positions = list(range(1_000, 1_000 + failing))
    kept = shown_rows(rows, positions)
    assert len(kept) == HTML_ROWS_PER_CELL
    assert [row["index"] for row in kept if row["index"] >= 1_000] == positions[:HTML_ROWS_PER_CELL]
    note = rows_note(len(rows), failing)
    assert "1,500 rows are not shown; every row is in rows.csv" in note
    assert ("failing" in note) == bool(failing)
