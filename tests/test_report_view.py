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
    result = run(pytester, f"--assert={assertions}", "--promptflow-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    assert _verdicts(_document(pytester.path / "out")) == {
        "classify=variant_0": [("accuracy", ">=", 0.75, 1.0, True), ("error_rate", "==", 0.0, 0.0, True)],
        "classify=variant_1": [("accuracy", ">=", 0.75, 0.5, False)],  # the first assert stops the test
    }
    page = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    chart = page[page.index("<figcaption>accuracy <span"):]  # the metric's chart in Metrics across cells
    chart = chart[: chart.index("</svg>")]
    assert "<title>threshold 0.75</title>" in chart
    if assertions == "rewrite":  # the failure still prints the threshold table
        result.stdout.fnmatch_lines(["*accuracy 0.5 >= 0.75 failed for cell clf-classify=variant_1-small*"])


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
        "accuracy", "score", "ev.accuracy", "ev.score", "f1_like.f1_score"}
    header = next(line for line in result.outlines if line.strip().startswith("cell "))
    assert header.split() == ["cell", "accuracy", "f1_score", "f1_score_pass_rate", "error_rate", "latency.p95",
                              "cost.total", "verdict"]
    page = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    headings = re.findall(r'<th class="num"[^>]*>([^<]*)', page)
    assert "accuracy" in headings and not {"score", "ev.accuracy", "f1_score_score"} & set(headings)
    assert "<strong>accuracy</strong> = ev.accuracy = ev.score = score" in page
    assert page.count("<figcaption>accuracy ") == 1 and "<figcaption>score" not in page
