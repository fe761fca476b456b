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
    chart = page[page.index("<figcaption>accuracy"):]
    chart = chart[: chart.index("</svg>")]
    assert "<title>threshold 0.75</title>" in chart
    if assertions == "rewrite":  # the failure still prints the threshold table
        result.stdout.fnmatch_lines(["*accuracy 0.5 >= 0.75 failed for cell clf-classify=variant_1-small*"])
