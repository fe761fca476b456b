"""The HTML report: unit tests on a small hand-built document, and one acceptance test that runs a
project with ``--promptflow-report`` and opens the page in headless Chromium."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL, WITH_BOOM, Project, jsonl, run
from fault_endpoint import FaultEndpoint
from llm_variants import SYSTEM, write_flows

from pytest_promptflow.reporting.html import (
    FOLD_CHARS,
    HTML_VALUE_CHARS,
    json_island,
    metric_columns,
    prompt_text,
    render,
    write_html,
)

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = "</script><script>alert(2)</script>"
IMAGE = "<img src=x onerror=alert(3)>"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _row(index: int, text: str, output: Any, score: Any, error: str | None = None) -> dict[str, Any]:
    return {"index": index, "data": {"text": text, "label": "negative"}, "inputs": {"text": text},
            "outputs": None if error else {"category": output}, "error": error, "latency": 0.0123, "cached": True,
            "llm_calls": 1, "tokens": 10, "cost": 0.0, "scores": {} if error else {"ev.score": score}}


def _cell(config: str, dataset: str, accuracy: float, rows: list[dict[str, Any]], outcome: str = "passed",
          failing: bool = False) -> dict[str, Any]:
    variant = config.partition("=")[2]
    verdict = {"metric": "accuracy", "op": ">=", "threshold": 0.75, "actual": accuracy, "passed": not failing,
               "item": f"test_x.py::test_acc[clf-{config}-{dataset}]"}
    return {"flow": "clf", "cell": f"clf-{config}-{dataset}", "config": config, "variants": {"classify": variant},
            "default": variant == "variant_0", "overrides": {"nodes.classify.inputs.temperature": 0.7},
            "dataset": dataset, "dataset_path": f"data/{dataset}.jsonl", "dataset_hash": "ab" * 32,
            "items": [{"nodeid": verdict["item"], "outcome": outcome}], "verdicts": [verdict],
            "metrics": {"rows": float(len(rows)), "error_rate": 0.0, "ev.accuracy": accuracy, "accuracy": accuracy,
                        "latency.p95": 0.02},
            "outcome": outcome, "rows": rows}


def _call(user: str, answer: str, **fields: Any) -> dict[str, Any]:
    """A row's LLM call as report.json holds it."""
    return {"node": "classify", "kind": "chat/completions", "model": "gpt-x", "evaluator": None,
            "messages": [{"role": "system", "content": "Rate it."}, {"role": "user", "content": user}],
            "parameters": {"temperature": 0.0, "max_tokens": 3}, "answer": answer, "finish_reason": "stop",
            "truncated": False, "prompt_tokens": 9, "completion_tokens": 2, "cost": 0.0, "latency": 0.25,
            "from_store": False, "error": None, **fields}


def _document() -> dict[str, Any]:
    good = [_row(0, "a good day", "positive", 1), _row(1, SCRIPT, "negative", 1), _row(2, "boom", None, None, "E: x")]
    bad = [_row(0, "a good day", "positive", 1), _row(1, SCRIPT, BREAKOUT, 0), _row(2, "boom", None, None, "E: x")]
    cells = [_cell("classify=variant_0", "hard", 0.5, good[:1]), _cell("classify=variant_0", "small", 1.0, good),
             _cell("classify=variant_1", "small", 0.5, bad, "failed", failing=True)]
    flow = {"flow": "clf", "primary_metric": "accuracy", "best": "classify=variant_0",
            "best_reason": "highest mean accuracy (0.75) over 2 datasets among 1 passing configuration", "cells": cells}
    return {"version": 1, "environment": {"git_commit": "abc123", "build_id": ""}, "flows": [flow]}


class _Tables(HTMLParser):
    """Rows of every <table> as (tr class, [cell texts]), keyed by the table's class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str, list[str]]]] = {}
        self._table = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        klass = dict(attrs).get("class") or ""
        if tag == "table":
            self._table = klass
        elif tag == "tr":
            self.tables.setdefault(self._table, []).append((klass, []))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1][1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> dict[str, list[tuple[str, list[str]]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _island(page: str) -> str:
    found = re.search(r'<script type="application/json" id="promptflow-data">(.*?)</script>', page, re.S)
    assert found is not None
    return found.group(1)


# --- unit tests on a hand-built document ---------------------------------------------------------


def test_values_from_models_and_datasets_are_escaped() -> None:
    page = render(_document())
    assert SCRIPT not in page and "alert(2)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script") == 2  # the data island and the page's own script, nothing else


def test_the_data_island_round_trips_and_cannot_end_its_element() -> None:
    document = _document()
    raw = _island(render(document))
    assert not set("<>&") & set(raw)
    data = json.loads(raw)
    cells = data["flows"][0]["cells"]
    assert [c["cell"] for c in cells] == [c["cell"] for c in document["flows"][0]["cells"]]
    mine = document["flows"][0]["cells"][2]["rows"]
    assert [(r["data"], r["outputs"], r["error"], r["scores"]) for r in cells[2]["rows"]] == \
        [(r["data"], r["outputs"], r["error"], r["scores"]) for r in mine]
    assert [r["failing"] for r in cells[2]["rows"]] == [False, True, True]
    assert json.loads(json_island({"x": "a & b <c> " + BREAKOUT})) == {"x": "a & b <c> " + BREAKOUT}


def test_comparison_table_marks_the_best_configuration_and_failing_thresholds() -> None:
    page = render(_document())
    rows = _tables(page)["comparison"]
    header = rows[0][1]  # what decides a cell first: the primary metric, the verdict, the error rate (and cost)
    assert header == ["configuration", "dataset", "accuracy", "verdict", "error_rate ↓", "ev.accuracy",
                      "latency.p95 ↓", "rows"]
    body = rows[1:]
    assert [klass for klass, _ in body] == ["cell best", "cell best", "cell"]
    assert body[0][1][:4] == ["★ classify=variant_0temperature=0.7", "hard", "0.5✓ >= 0.75", "passed"]
    failing = body[2][1]
    assert failing[2:4] == ["0.5✗ >= 0.75", "failedfails accuracy >= 0.75"]
    assert body[1][1][2] == "1✓ >= 0.75"
    assert "Best configuration: <strong>classify=variant_0</strong> &mdash; highest mean accuracy" in page


def test_each_metric_has_an_inline_svg_chart() -> None:
    page = render(_document())
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    aliases = '<span class="aliases" title="the same number as ev.accuracy">(1 other name)</span>'
    assert captions[:2] == [f"accuracy {aliases}", 'error_rate <span class="lower">(lower is better)</span>']
    assert len(captions) == page.count("<svg") == 4  # accuracy (ev.accuracy joined), error_rate, latency.p95, rows
    first = page[page.index("<svg"): page.index("</svg>")]
    assert first.count('<g class="best">') == 2 and first.count('<g class="fail">') == 1
    assert 'class="threshold"' in first  # the 0.75 line


def test_a_metric_with_an_interval_has_an_error_bar_and_says_its_bounds() -> None:
    document = _document()
    cells = document["flows"][0]["cells"]
    cells[1]["intervals"] = {"accuracy.ci_low": 0.4385, "accuracy.ci_high": 1.0, "accuracy.se": 0.0, "accuracy.n": 3}
    cells[2]["intervals"] = {"accuracy.ci_low": None, "accuracy.ci_high": None, "accuracy.n": 1}  # one row: none
    page = render(document)
    first = page[page.index("<svg"): page.index("</svg>")]
    assert first.count('class="interval"') == 1
    title = "classify=variant_0 · small: 1; 95% interval 0.4385 to 1 (n 3)"
    group = first[first.index(f"<title>{title}</title>"):]
    bar = re.search(r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="14"/>', group)
    error = re.search(r'<path class="interval" d="M([\d.]+) ([\d.]+)H([\d.]+)M', group)
    assert bar and error
    left, width = float(bar.group(1)), float(bar.group(3))  # the bar spans 0 to 1: the interval 0.4385 to 1 on it
    assert float(error.group(1)) == pytest.approx(left + 0.4385 * width, abs=0.1)
    assert float(error.group(3)) == pytest.approx(left + width, abs=0.1)
    assert float(error.group(2)) == float(bar.group(2)) + 7  # across the bar's middle
    assert 'title="95% interval 0.4385 to 1 (n 3)">1' in page  # the comparison table's value says it too


def test_drill_down_marks_failing_rows() -> None:
    rows = [r for r in _tables(render(_document()))["rows"] if r[0].startswith("row")]
    assert [klass for klass, _ in rows] == ["row", "row", "row", "row failing", "row", "row failing", "row failing"]
    assert rows[5][1][:6] == ["1", "text: <script>alert(1)</script>label: negative", "text: <script>alert(1)</script>",
                              f"category: {BREAKOUT}", "", "ev.score: 0"]
    assert rows[6][1][3:5] == ["—", "E: x"]


def test_each_row_folds_its_llm_calls_away_and_escapes_them() -> None:
    document = _document()
    long = "x" * (FOLD_CHARS + 1) + "y" * HTML_VALUE_CHARS
    rows = document["flows"][0]["cells"][2]["rows"]
    rows[0]["calls"] = [_call(IMAGE, SCRIPT, finish_reason="length", truncated=True),
                        _call(long, "4", evaluator="judge", from_store=True, latency=None)]
    rows[2]["calls"] = [_call("boom", "", error="http://x/v1: gave up after 3 attempts, last: HTTP 500")]
    page = render(document)
    assert IMAGE not in page and html.escape(IMAGE, quote=False) in page
    transcripts = [r for r in _tables(page)["rows"] if r[0].startswith("transcript")]
    assert [klass for klass, _ in transcripts] == ["transcript", "transcript failing"]
    first, failed = transcripts[0][1][1], transcripts[1][1][1]
    assert first.startswith("2 LLM calls, truncated node classify · chat/completions · gpt-x · finish_reason length "
                            "truncated · tokens 9 + 2 · cost 0 · latency 250.0 ms temperature: 0 · max_tokens: 3 "
                            f"system Rate it. user {IMAGE} answer {SCRIPT}")
    assert "evaluator judge · chat/completions · gpt-x · finish_reason stop · tokens 9 + 2 · cost 0 · latency — · " \
        "from store" in first
    folded = f"user {'x' * FOLD_CHARS}… ({len(long):,} characters)"  # its start; open, the first HTML_VALUE_CHARS
    whole = long[:HTML_VALUE_CHARS] + f"… [cut: {len(long):,} characters in all; the full value is in report.json]"
    assert f"{folded}{whole} answer 4" in first
    assert failed.startswith("1 LLM call, 1 failed") and failed.endswith("error http://x/v1: gave up after 3 "
                                                                         "attempts, last: HTTP 500")
    island = json.loads(_island(page))["flows"][0]["cells"][2]["rows"]
    assert [row["prompt"] for row in island] == [f"system: Rate it.\nuser: {IMAGE}", "", "system: Rate it.\nuser: boom"]


def test_a_rows_prompt_text_names_its_calls_when_it_has_several() -> None:
    calls = [_call("a", "1"), _call("b", "2", node="check"), _call("c", "3", evaluator="judge")]
    assert prompt_text(calls) == "[classify]\nsystem: Rate it.\nuser: a\n\n[check]\nsystem: Rate it.\nuser: b"
    assert prompt_text(calls[2:]) == "" and prompt_text([]) == ""


def test_the_page_fetches_nothing() -> None:
    page = render(_document())
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"\b(src|href)\s*=\s*[\"'](?!#)", page)  # only in-page anchors
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "Content-Security-Policy\" content=\"default-src 'none';" in page


def test_metric_columns_are_stable_whatever_the_order_of_the_cells_metrics() -> None:
    document = _document()
    flow = document["flows"][0]
    before = metric_columns(flow)
    for cell in flow["cells"]:
        cell["metrics"] = dict(reversed(list(cell["metrics"].items())))
    assert metric_columns(flow) == before == ["accuracy", "ev.accuracy", "error_rate", "latency.p95", "rows"]


def test_write_html_writes_the_page_even_of_an_empty_document(tmp_path: Path) -> None:
    write_html(_document(), tmp_path / "out" / "report.html")
    assert (tmp_path / "out" / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "<h1>promptflow report</h1>" in render({"version": 1, "environment": {}, "flows": []})


# --- acceptance: a project's report in headless Chromium -----------------------------------------


def _needs_chromium() -> None:
    if Path(CHROMIUM).exists() and importlib.util.find_spec("playwright") is not None:
        return
    message = f"needs the playwright package and Chromium at {CHROMIUM} (`make setup` installs both)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_report_html_in_chromium(project: Project, pytester: pytest.Pytester, tmp_path: Path) -> None:
    _needs_chromium()
    from playwright.sync_api import expect, sync_playwright

    project.dag_flow()
    project.eval_flow()
    project.write("data/xss.jsonl", jsonl(SMALL + [{"text": SCRIPT, "label": "negative"}] + WITH_BOOM[-1:]))
    pytester.makepyfile(test_report="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data="data/xss.jsonl", variants={"classify": "*"})
        def test_accuracy(flow_run):
            result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                            "prediction": "${run.outputs.category}"})
            assert result.metrics["accuracy"] >= 0.75
    """)
    folder = pytester.path / "out"
    run(pytester, "--promptflow-report", str(folder)).assert_outcomes(passed=1, failed=1)
    page_file = folder / "report.html"
    assert SCRIPT not in page_file.read_text(encoding="utf-8")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.as_uri())

        comparison = page.locator("table.comparison")
        expect(comparison).to_be_visible()
        expect(comparison.locator("tbody tr")).to_have_count(2)
        expect(comparison.locator("tr.best")).to_contain_text("classify=variant_0")
        expect(comparison.locator("tr.cell:not(.best)")).to_contain_text("fails accuracy >= 0.75")
        expect(page.locator("svg.chart").first).to_be_visible()
        assert page.locator("figure svg.chart").count() >= 3

        drill = page.locator("details.cell-rows", has_text="classify=variant_1")
        drill.locator("summary").click()
        expect(drill.get_by_text(SCRIPT).first).to_be_visible()
        rows = drill.locator("tr.row")
        expect(rows).to_have_count(6)
        page.get_by_label("only failing rows").check()
        expect(rows.locator("visible=true")).to_have_count(4)  # 3 wrong answers (the script one too), 1 error
        expect(drill.locator("tr.row.failing").locator("visible=true")).to_have_count(4)

        compare = page.locator("details.compare")
        compare.locator("summary").click()
        page.get_by_label("first cell").select_option(label="classify=variant_0 · xss")
        page.get_by_label("second cell").select_option(label="classify=variant_1 · xss")
        side = compare.locator("table.compare")
        expect(side).to_be_visible()
        expect(side.locator("tbody tr")).to_have_count(4)  # rows failing in either cell
        expect(side.locator("thead")).to_contain_text("classify=variant_0 · xss")
        expect(side.get_by_text(SCRIPT)).to_be_visible()
        page.get_by_label("only failing rows").uncheck()
        expect(side.locator("tbody tr")).to_have_count(6)
        expect(compare).to_contain_text("6 rows, 3 with different outputs")

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        static = browser.new_context(java_script_enabled=False).new_page()  # tables and charts need no script
        static.goto(page_file.as_uri())
        expect(static.locator("table.comparison")).to_be_visible()
        expect(static.locator("svg.chart").first).to_be_visible()
        expect(static.get_by_label("only failing rows")).to_be_hidden()
        expect(static.locator("details.compare")).to_be_hidden()
        browser.close()

    assert requests == [page_file.as_uri()]
    assert dialogs == [] and errors == []


def test_pytest_html_report_gets_no_markup_from_a_dataset_name_or_an_override_value(
        project: Project, pytester: pytest.Pytester) -> None:
    """pytest-html writes test ids into its page as HTML: ours must carry none of a user's markup."""
    markup = "<img src=x onerror=alert(1)>"
    project.dag_flow()
    project.data()
    pytester.makepyfile(test_ids=f"""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data={{{markup!r}: "data/small.jsonl"}},
                                overrides={{"nodes.classify.inputs.text": [{markup!r}]}})
        def test_runs(flow_run):
            assert flow_run.rows
    """)
    page = pytester.path / "page.html"
    result = run(pytester, "--html", str(page), "--self-contained-html", "-v")
    result.assert_outcomes(passed=1)
    ids = [line for line in result.outlines if "test_runs[" in line]
    assert ids and not any(set('<>"\'&') & set(line.split(" ")[0]) for line in ids), ids
    # the page keeps its data in an attribute and inserts its strings as HTML: unescaped once, no markup
    assert "<img src=x" not in html.unescape(page.read_text(encoding="utf-8"))


def test_transcripts_and_the_prompt_difference_in_chromium(project: Project, pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two prompt variants of an LLM node against a real local endpoint: a row's transcript opens on the prompt
    and the answer, markup in them is text, and the side-by-side view marks where the two prompts differ."""
    _needs_chromium()
    from playwright.sync_api import expect, sync_playwright

    texts = ["a good day", SCRIPT, IMAGE]
    with FaultEndpoint() as endpoint:
        write_flows(project, endpoint, monkeypatch)
        project.data("rows", [{"text": text} for text in texts])
        pytester.makepyfile(test_report="""
            import pytest

            @pytest.mark.promptflow(flow="flows/clf", data="data/rows.jsonl", variants={"classify": "*"})
            def test_runs(flow_run):
                assert flow_run.rows
        """)
        run(pytester, "--promptflow-report", "out").assert_outcomes(passed=2)
    page_file = pytester.path / "out" / "report.html"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        dialogs: list[str] = []
        errors: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.as_uri())

        drill = page.locator("details.cell-rows", has_text="classify=variant_1")
        drill.locator(":scope > summary").click()
        transcripts = drill.locator("tr.transcript")
        expect(transcripts).to_have_count(3)
        hostile = transcripts.nth(2).locator("details.calls")
        expect(hostile.locator(":scope > summary")).to_have_text("1 LLM call")
        expect(hostile.locator(".call")).to_be_hidden()  # collapsed until asked for
        hostile.locator(":scope > summary").click()
        call = hostile.locator(".call")
        expect(call.locator(".call-head")).to_contain_text("node classify · chat/completions · gpt-35-turbo · "
                                                           "finish_reason stop · tokens")
        expect(call.locator(".params")).to_contain_text("max_tokens: 21")
        messages = call.locator(".message")
        expect(messages).to_have_count(3)
        expect(messages.nth(0)).to_have_text(f"system {SYSTEM['variant_1']}")
        expect(messages.nth(1)).to_have_text(f"user {IMAGE}")
        expect(messages.nth(2)).to_have_text(f"answer {endpoint.answer(IMAGE)}")
        transcripts.nth(1).locator("details.calls > summary").click()
        expect(transcripts.nth(1).locator(".message").nth(1)).to_have_text(f"user {SCRIPT}")
        assert drill.locator("img").count() == 0
        page.get_by_label("only failing rows").check()  # no row fails: their transcripts go with them
        expect(transcripts.locator("visible=true")).to_have_count(0)
        page.get_by_label("only failing rows").uncheck()

        compare = page.locator("details.compare")
        compare.locator("summary").click()
        page.get_by_label("first cell").select_option(label="classify=variant_0 · rows")
        page.get_by_label("second cell").select_option(label="classify=variant_1 · rows")
        prompts = compare.locator("table.compare tr.prompts")
        expect(prompts).to_have_count(3)
        expect(compare).to_contain_text("3 rows, 0 with different outputs, 3 with different prompts")
        first = prompts.nth(1)
        expect(first.locator("td.prompt").nth(0)).to_have_text(f"system: {SYSTEM['variant_0']}\nuser: {SCRIPT}")
        removed = " ".join(first.locator("td.prompt").nth(0).locator("del").all_inner_texts())
        added = " ".join(first.locator("td.prompt").nth(1).locator("ins").all_inner_texts())
        assert removed.split() == ["Answer", "one", "word:", "negative."]  # "with positive or" is in both
        assert added.split() == ["You", "are", "a", "careful", "sentiment", "rater.", "Reply", "negative", "only."]
        expect(first.locator("td.prompt").nth(1).locator("ins").first).to_have_css("background-color",
                                                                                   "rgb(209, 250, 223)")
        shot = tmp_path / "transcripts.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
        browser.close()

    assert requests == [page_file.as_uri()]
    assert dialogs == [] and errors == []
