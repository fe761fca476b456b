"""What the reports explain: marker-test thresholds as verdicts (passing or failing, with or without assertion
rewriting), what each variant is, the figure the best configuration rests on, and one name per metric."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, run

MARKER_SUITE = """
import pytest

@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"})
def test_accuracy(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                    "prediction": "${run.outputs.category}"})
    assert 0.75 <= result.metrics["accuracy"]
    assert flow_run.metrics["error_rate"] == 0
"""


def _document(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def _verdicts(document: dict[str, Any]) -> dict[str, list[tuple[str, str, float, float, bool]]]:
    return {cell["config"]: [(v["metric"], v["op"], v["threshold"], v["actual"], v["passed"])
                             for v in cell["verdicts"]]
            for flow in document["flows"] for cell in flow["cells"]}


@pytest.mark.parametrize("assertions", ["plain", "rewrite"])
def test_marker_thresholds_are_verdicts_whether_they_pass_or_fail(project: Project, pytester: pytest.Pytester,
                                                                  assertions: str) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    pytester.makepyfile(test_marker=MARKER_SUITE)
    # a subprocess: in this process the outer session's import hook would rewrite the test module's asserts
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--assert={assertions}", "--promptflow-report",
                                           "out")
    result.assert_outcomes(passed=1, failed=1)
    assert _verdicts(_document(pytester.path / "out")) == {
        "classify=variant_0": [("accuracy", ">=", 0.75, 1.0, True), ("error_rate", "==", 0.0, 0.0, True)],
        "classify=variant_1": [("accuracy", ">=", 0.75, 0.5, False)],  # the first assert stops the test
    }
    page = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    chart = page[page.index("<figcaption>accuracy <span"):]  # the metric's chart in Metrics across cells
    chart = chart[: chart.index("</svg>")]
    assert "<title>threshold 0.75</title>" in chart
    failure = "*accuracy 0.5 >= 0.75 failed for cell clf-classify=variant_1-small*"
    if assertions == "rewrite":  # the failure still prints the threshold table
        result.stdout.fnmatch_lines([failure])
    else:
        result.stdout.no_fnmatch_line(failure)  # truly plain: nothing rewrote the assert


# --- what a variant is -----------------------------------------------------------------------------------------


def test_each_variant_is_its_source_text_and_its_literal_parameters(tmp_path: Path) -> None:
    from pytest_promptflow.variant_specs import describe_variants

    few = "system: reply in one word\nuser: I love it\nassistant: positive\n{{text}}\n"
    (tmp_path / "few.jinja2").write_text(few)
    (tmp_path / "zero.jinja2").write_text("system: reply in one word\n{{text}}\n")
    node = {"type": "llm", "inputs": {"temperature": 0.0, "max_tokens": 10, "text": "${inputs.text}"}}
    definition = {"node_variants": {"classify": {"default_variant_id": "few", "variants": {
        "zero": {"node": {**node, "source": {"type": "code", "path": "zero.jinja2"},
                          "inputs": {**node["inputs"], "max_tokens": 30}}},
        "few": {"node": {**node, "source": {"type": "code", "path": "few.jinja2"}}},
        "tool": {"node": {**node, "source": {"type": "package", "tool": "my_pkg.tools.classify"}}}}}}}
    described = describe_variants("dag", tmp_path, definition)["classify"]
    assert described["few"] == {"source": "few.jinja2", "default": True,
                                "template": few,
                                "parameters": {"temperature": 0.0, "max_tokens": 10}}
    assert described["zero"]["parameters"] == {"temperature": 0.0, "max_tokens": 30}
    assert not described["zero"]["default"]
    assert described["tool"]["source"] == "my_pkg.tools.classify" and described["tool"]["template"] is None
    assert describe_variants("flex", tmp_path, definition) == {} == describe_variants("dag", None, definition)


def test_the_page_shows_each_variants_difference_from_the_default_escaped() -> None:
    from pytest_promptflow.reporting.html import render
    from pytest_promptflow.reporting.terminal import comparison_tables

    variants = {"classify": {
        "v0": {"source": "few.jinja2", "template": "reply in one word\nI love it: positive\n{{text}}", "default": True,
               "parameters": {"temperature": 0.0, "max_tokens": 10}},
        "v1": {"source": "zero.jinja2", "template": "reply in one word\n<b>{{text}}</b>", "default": False,
               "parameters": {"temperature": 0.0, "max_tokens": 30}}}}
    document = {"version": 1, "environment": {}, "flows": [
        {"flow": "clf", "primary_metric": None, "best": None, "best_reason": "none", "selection": None,
         "variants": variants, "cells": []}]}
    page = render(document)
    assert "<strong>v1</strong> against <strong>v0</strong>:\nparameters max_tokens: 10 \u2192 30" in page
    assert "template few.jinja2 \u2192 zero.jinja2" in page
    diff = page[page.index('<pre class="diff">'):]
    diff = diff[: diff.index("</pre>")]
    assert re.findall(r"<(del|ins|span class=\"same\")>([^<]*)", diff) == [
        ("span class=\"same\"", "  reply in one word"), ("del", "- I love it: positive"), ("del", "- {{text}}"),
        ("ins", "+ &lt;b&gt;{{text}}&lt;/b&gt;")]
    assert "<b>{{text}}" not in page
    line = [text for text in comparison_tables(document) if "variants:" in text]
    assert line == ["  variants: classify: v0 few.jinja2 max_tokens=10; v1 zero.jinja2 max_tokens=30"]


# --- one name per metric ---------------------------------------------------------------------------------------

NAMES_SUITE = """
import pytest

def f1_like(category, label):
    value = float(category == label)
    return {"f1_score": value, "f1_score_score": value, "f1_score_result": "pass" if value else "fail"}

@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
def test_names(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                    "prediction": "${run.outputs.category}"})
    f1 = flow_run.evaluate(f1_like, mapping={"category": "${run.outputs.category}", "label": "${data.label}"})
    for name in ("accuracy", "score", "ev.accuracy", "ev.score"):
        assert result.metrics[name] >= 0.75
    assert f1.metrics["f1_score_score"] == f1.metrics["f1_like.f1_score"] == 1.0
    never = flow_run.evaluate(lambda category: {"accuracy": 0.0}, mapping={"category": "${run.outputs.category}"},
                              name="never")
    assert never.metrics["accuracy"] <= 0.5  # another evaluator's accuracy: its verdict says never.accuracy
"""


def test_one_number_shows_under_one_name_and_every_name_still_works(project: Project,
                                                                    pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    pytester.makepyfile(test_names=NAMES_SUITE)
    result = run(pytester, "--promptflow-report", "out")
    result.assert_outcomes(passed=1)
    flow = _document(pytester.path / "out")["flows"][0]
    assert flow["metric_aliases"] == {
        "ev.accuracy": "accuracy", "score": "accuracy", "ev.score": "accuracy",  # the logged mean of column score
        "f1_like.f1_score": "f1_score", "f1_score_score": "f1_score", "f1_like.f1_score_score": "f1_score",
        "f1_like.f1_score_pass_rate": "f1_score_pass_rate"}
    assert {v["metric"] for v in flow["cells"][0]["verdicts"]} == {  # metric == metric is no threshold
        "accuracy", "score", "ev.accuracy", "ev.score", "f1_like.f1_score", "never.accuracy"}
    header = next(line for line in result.outlines if line.strip().startswith("cell "))
    assert header.split() == ["cell", "accuracy", "f1_score", "f1_score_pass_rate", "error_rate", "latency.p95",
                              "cost.total", "verdict"]
    page = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    headings = re.findall(r'<th class="num"[^>]*>([^<]*)', page)
    assert "accuracy" in headings and not {"score", "ev.accuracy", "f1_score_score"} & set(headings)
    assert "<strong>accuracy</strong> = ev.accuracy = ev.score = score" in page
    assert page.count("<figcaption>accuracy ") == 1 and "<figcaption>score" not in page


# --- the page in headless Chromium -----------------------------------------------------------------------------

WIDE_SUITE = """
import pytest

MIN = {"small": 0.75, "hard": 0.5}

def many(category, label):  # enough columns that the comparison table scrolls sideways
    return {f"a_rather_long_metric_name_{i}": float(category == label) for i in range(10)}

@pytest.mark.promptflow(flow="flows/clf", data=["data/small.jsonl", "data/hard.jsonl"], variants={"classify": "*"})
def test_accuracy(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                    "prediction": "${run.outputs.category}"})
    flow_run.evaluate(many, mapping={"category": "${run.outputs.category}", "label": "${data.label}"})
    assert result.metrics["accuracy"] >= MIN[flow_run.cell.dataset.name]
"""
MARKUP = "<script>alert(3)</script>"


def test_the_page_says_what_each_variant_is_why_the_best_won_and_what_decides_a_cell(
        project: Project, pytester: pytest.Pytester) -> None:
    from test_html_report import CHROMIUM, CHROMIUM_ARGS, _needs_chromium

    _needs_chromium()
    from playwright.sync_api import expect, sync_playwright

    from conftest import ALWAYS_PY, HARD

    project.dag_flow()
    project.write("flows/clf/always.py", ALWAYS_PY + f"# answers {MARKUP} too\n")
    project.eval_flow()
    project.data("small")
    project.data("hard", HARD)
    pytester.makepyfile(test_wide=WIDE_SUITE)
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--assert=plain", "--promptflow-report",
                                  "out").assert_outcomes(passed=3, failed=1)
    page_file = pytester.path / "out" / "report.html"
    assert MARKUP not in page_file.read_text(encoding="utf-8")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_file.as_uri())

        # the overview names the best configuration's score, and a table and a chart say why it won
        expect(page.locator("header table")).to_contain_text(
            "classify=variant_0accuracy 0.8333 [0.36, 0.99], mean over 2 datasets (6 rows)")
        why = page.locator("table.configurations tbody tr")
        expect(why).to_have_count(2)
        expect(why.nth(0)).to_contain_text("classify=variant_0")
        expect(why.nth(0)).to_contain_text("0.8333 [0.36, 0.99]")
        expect(why.nth(1)).to_contain_text("0.5 [0.14, 0.86]")
        expect(why.nth(1)).to_contain_text("a cell did not pass")
        figure = page.locator("figure", has=page.locator("figcaption", has_text="accuracy, mean over 2 datasets"))
        expect(figure.locator("svg.chart")).to_be_visible()
        expect(figure.locator("g.best")).to_have_count(1)

        # what each variant is: its source and the difference of its text from the default's, escaped
        variants = page.locator("table.variants tbody tr")
        expect(variants.nth(0)).to_contain_text("variant_0 (default)")
        expect(variants.nth(1)).to_contain_text("always.py")
        diff = page.locator("section.flow pre.diff").first
        expect(diff.locator("del", has_text="def classify(text: str")).to_be_visible()
        expect(diff.locator("ins", has_text="def always(text: str")).to_be_visible()
        expect(diff.locator("ins", has_text=MARKUP)).to_be_visible()

        # one name per metric; what decides a cell is in view without scrolling the comparison sideways
        comparison = page.locator("table.comparison")
        headings = comparison.locator("thead th").all_inner_texts()
        assert "accuracy" in headings and not {"score", "ev.accuracy", "ev.score"} & set(headings)
        scroller = page.locator("section.flow div.scroll", has=comparison)
        assert scroller.evaluate("node => node.scrollWidth > node.clientWidth")  # the table does scroll
        right = scroller.evaluate("node => node.getBoundingClientRect().right")
        for name in ("configuration", "accuracy", "verdict", "error_rate", "cost.total"):
            box = comparison.locator("thead th", has_text=name).first.bounding_box()
            assert box is not None and box["x"] + box["width"] <= right, name
        last = comparison.locator("thead th").last.bounding_box()
        assert last is not None and last["x"] > right  # only further metrics need the scroll

        # the marker test's thresholds (assert, under --assert=plain) are drawn on each cell's bar
        chart = page.locator("figure", has=page.locator("figcaption", has_text="accuracy (3 other names)"))
        ticks = chart.locator("line.threshold")
        expect(ticks).to_have_count(4)
        assert sorted(t.text_content() or "" for t in ticks.locator("title").all()) == \
            ["threshold 0.5", "threshold 0.5", "threshold 0.75", "threshold 0.75"]
        expect(page.locator("details.cell-rows summary").first).to_contain_text(
            "with an error or a score of 0 or false")
        browser.close()
    assert errors == []


def test_pytest_html_extras_list_a_number_once_unless_a_threshold_names_another_of_its_names() -> None:
    from pytest_promptflow.reporting.html_extras import metrics_fragment

    item = {"cell": "clf-small", "dataset": "small", "rows": [{}], "metrics": {
        "accuracy": 0.5, "score": 0.5, "ev.accuracy": 0.5, "ev.score": 0.5, "error_rate": 0.0},
        "aliases": {"score": "accuracy", "ev.accuracy": "accuracy", "ev.score": "accuracy"},
        "verdicts": [{"metric": "ev.score", "op": ">=", "threshold": 0.75, "actual": 0.5, "passed": False}]}
    names = re.findall(r"<tr[^>]*><td>([^<]*)</td>", metrics_fragment(item))
    assert names == ["ev.score", "accuracy", "error_rate"]
