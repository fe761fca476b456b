"""Intervals where a user reads them: clustered by a ``cluster`` column, in the terminal table and the HTML page,
for an aggregation's logged metric, and in ``pytest-promptflow plan``.

Every flow here is pure Python (see conftest.py), so no model server is started.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest
from conftest import AGGREGATE_PY, Project, run

from pytest_promptflow.aggregation import RESAMPLES
from pytest_promptflow.stats import (
    bootstrap_indices,
    bootstrap_interval,
    clustered_wilson,
    paired_rows_needed,
    threshold_mde,
    threshold_rows_needed,
    wilson,
)

#: 20 rows in 5 clusters of 4 whose rows all score alike: clusters 0-2 right, 3-4 wrong for the keyword classifier.
CLUSTERED = [{"text": f"good {c}-{i}", "label": "positive" if c < 3 else "negative", "cluster": f"doc{c}"}
             for c in range(5) for i in range(4)]
UNCLUSTERED = [{k: v for k, v in row.items() if k != "cluster"} for row in CLUSTERED]

SCORED = """\
name: clf
flow: ../flows/clf
datasets:
- name: {name}
  source: ../data/{name}.jsonl
  mappings:
    text: "${{data.text}}"
evaluators:
- name: acc
  flow: ../flows/ev
  datasets:
  - name: {name}
    mappings:
      groundtruth: "${{data.label}}"
      prediction: "${{run.outputs.category}}"
{extra}"""


def _experiment(project: Project, name: str, extra: str = "", folder: str = "exp") -> None:
    project.experiment(SCORED.format(name=name, extra=extra), folder=folder)


def _cells(pytester: pytest.Pytester, folder: str = "out") -> dict[str, dict[str, Any]]:
    """The report's cells by dataset; ``flow_cells``: every cell of that dataset."""
    document = json.loads((pytester.path / folder / "report.json").read_text(encoding="utf-8"))
    cells = [cell for flow in document["flows"] for cell in flow["cells"]]
    return {cell["dataset"]: {**cell, "flow_cells": [c for c in cells if c["dataset"] == cell["dataset"]]}
            for cell in cells}


def test_a_cluster_column_widens_the_interval_of_rows_that_move_together(
        project: Project, pytester: pytest.Pytester) -> None:
    """12 of 20 right: Wilson takes 20 independent rows; by cluster there are 5 draws (clustered Wilson on an
    effective 5), so the interval widens and the same ``at 95%`` gate that passes on the rows fails on the
    clusters (one-sided lower bounds 0.395 and 0.204)."""
    project.dag_flow()
    project.eval_flow()
    project.data("clustered", CLUSTERED)
    project.data("plain", UNCLUSTERED)
    gate = 'thresholds:\n  score: ">= 0.3 at 95%"\n'
    _experiment(project, "clustered", gate, folder="a")
    _experiment(project, "plain", gate, folder="b")
    result = run(pytester, "--promptflow-report", "out", "-k", "variant_0 and plain-")
    result.assert_outcomes(passed=1, failed=1)
    cells = _cells(pytester)
    plain, clustered = (cells[name]["intervals"] for name in ("plain", "clustered"))
    expected_plain = wilson(12, 20)
    scores = [1.0] * 12 + [0.0] * 8
    expected = clustered_wilson(scores, [row["cluster"] for row in CLUSTERED])
    assert [plain["score.ci_low"], plain["score.ci_high"]] == pytest.approx([expected_plain.low, expected_plain.high])
    assert [clustered["score.ci_low"], clustered["score.ci_high"]] == pytest.approx([expected.low, expected.high])
    width = {name: cells[name]["intervals"]["score.ci_high"] - cells[name]["intervals"]["score.ci_low"]
             for name in cells}
    assert width["clustered"] > 1.5 * width["plain"]
    assert clustered["score.n"] == plain["score.n"] == 20
    page = (pytester.path / "out" / "report.html").read_text(encoding="utf-8")
    assert f"95% interval {expected.low:.4g} to {expected.high:.4g} (n 20)" in page  # the error bar's tooltip
    # the terminal table: the gated metric with its 95% interval
    result.stdout.fnmatch_lines([
        "*cell*accuracy*error_rate*verdict",  # score is accuracy's per-row column: one number, one name
        f"*variant_0-decorate=plain-clustered*0.6! [[]{expected.low:.2g}, {expected.high:.2g}] *0 *FAIL score*",
        f"*variant_0-decorate=plain-plain*0.6 [[]{expected_plain.low:.2g}, {expected_plain.high:.2g}] *0 *ok",
    ])


# --- pytest-promptflow plan ------------------------------------------------------------------------------------

#: 20 rows: the keyword classifier (variant_0) gets all right, the "always positive" one (variant_1) 17 of 20.
MOSTLY_POSITIVE = [{"text": f"good {i}", "label": "positive"} for i in range(17)] + [
    {"text": f"bad {i}", "label": "negative"} for i in range(3)]


def plan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_promptflow.cli", "plan", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_plan_reads_the_last_report_and_says_the_rows_each_gate_needs(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small", MOSTLY_POSITIVE)
    _experiment(project, "small", 'variants:\n  nodes:\n    classify: "*"\nthresholds:\n'
                                  '  score: ">= 0.8 at 95%"\n  error_rate: "<= 0.2 at 95%"\n  accuracy: ">= 0.5"\n')
    pytester.makeini("[pytest]\npromptflow_report = out\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    shown = plan(cwd=pytester.path)
    assert shown.returncode == 0, shown.stderr
    alpha = 0.05
    mde = threshold_mde(20, 0.8, alpha)
    needed = threshold_rows_needed(0.8, 0.85 - 0.8, alpha)
    bound = wilson(17, 20, 0.95, sides=1).low
    pytest.LineMatcher(shown.stdout.splitlines()).fnmatch_lines([
        f"promptflow plan from {pytester.path / 'out' / 'report.json'} (min effect 0.05, 80% power):",
        "clf-classify=variant_0-small:",
        f"  error_rate <= 0.2 at 95%: passes, bound {wilson(0, 20, 0.95, sides=1).high:.3g}; n 20, "
        f"MDE {threshold_mde(20, 0.8, alpha):.3g} at n 20; "
        f"{threshold_rows_needed(0.8, 0.2, alpha)} rows (enough) to pass with 80% power if the truth is the measured 0",
        "  score >= 0.8 at 95%: passes, bound *; n 20, MDE * at n 20; * rows (enough) to pass *the measured 1",
        "clf-classify=variant_1-small:",
        "  error_rate <= 0.2 at 95%: passes*",
        f"  score >= 0.8 at 95%: fails, bound {bound:.3g}; n 20, MDE {mde:.3g} at n 20; "
        f"{needed} rows ({needed - 20} more) to pass with 80% power if the truth is the measured 0.85",
    ], consecutive=True)
    assert "accuracy" not in shown.stdout  # a gate on the point estimate has no level to plan for
    missing = plan("--report", "nowhere", cwd=pytester.path)
    assert missing.returncode == 2
    assert missing.stderr.startswith("pytest-promptflow: error: cannot read the report nowhere/report.json")
    assert len(missing.stderr.splitlines()) == 1


def _verdict(metric: str, op: str, threshold: float, actual: float, bound: float, passed: bool,
             **paired: Any) -> dict[str, Any]:
    return {"metric": metric, "op": op, "threshold": threshold, "actual": actual, "passed": passed, "level": 0.95,
            "bound": bound, "item": "t.py::test", **paired}


def test_plan_gives_a_paired_check_the_rows_its_discordance_needs(tmp_path: Path) -> None:
    """A hand-made report: a baseline check (the fields the paired comparison records) and a continuous score."""
    paired = _verdict("accuracy", ">=", 0.0, 0.01, -0.04, True, baseline="released", n=200, discordant=30,
                      mde=0.081, power=0.42, min_effect=0.05)
    continuous = _verdict("relevance", ">=", 3.5, 3.8, 3.62, True)
    cell = {"cell": "qa-defaults-questions", "verdicts": [paired, continuous, dict(continuous)],
            "intervals": {"relevance.n": 50, "relevance.se": 0.1, "relevance.ci_low": 3.6, "relevance.ci_high": 4.0},
            "rows": [{"scores": {"judge.relevance": 4.0}}, {"scores": {"judge.relevance": 3.0}}]}
    (tmp_path / "report.json").write_text(json.dumps({"version": 1, "flows": [{"flow": "qa", "cells": [cell]}]}))
    shown = plan("--report", str(tmp_path / "report.json"), "--min-effect", "0.1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = paired_rows_needed(30 / 200, 0.05, 0.05)  # the record's own min_effect wins over --min-effect
    z = NormalDist().inv_cdf(0.95) + NormalDist().inv_cdf(0.8)
    continuous_rows = math.ceil((z * 0.1 * math.sqrt(50) / 0.3) ** 2)
    assert shown.stdout.splitlines()[1:] == [
        "qa-defaults-questions:",
        f"  accuracy >= baseline at 95%: passes, bound -0.04 vs baseline released; n 200, 30 discordant, MDE 0.081, "
        f"power 0.42 for 0.05; {rows} rows ({rows - 200} more) to detect 0.05 with 80% power",
        f"  relevance >= 3.5 at 95%: passes, bound 3.62; n 50, MDE {z * 0.1:.3g} at n 50; "
        f"{continuous_rows} rows (enough) to pass with 80% power if the truth is the measured 3.8",
    ]
    bad = plan("--report", str(tmp_path), "--min-effect", "5", cwd=tmp_path)
    assert bad.returncode == 2 and "is not a number between 0 and 1" in bad.stderr


# --- a logged metric's interval: the aggregation re-run on bootstrap resamples -----------------------------------

COUNTING_CONFTEST = """
import json
from pathlib import Path

LOGGED = []


def _log(key, value):
    LOGGED.append(key)


def pytest_configure(config):
    from promptflow._core.metric_logger import add_metric_logger  # what a tracking client registers

    add_metric_logger(_log)


def pytest_unconfigure(config):
    from promptflow._core.metric_logger import remove_metric_logger

    remove_metric_logger(_log)
    Path("logged.json").write_text(json.dumps(LOGGED))
"""


#: the conftest aggregation, also logging a count that is no column's mean: only it is bootstrapped
MISSES_AGGREGATE_PY = AGGREGATE_PY.replace('    log_metric("accuracy", accuracy)\n',
                                           '    log_metric("accuracy", accuracy)\n'
                                           '    log_metric("misses", len(scores) - sum(scores))\n')


def _resampled_misses(cell: str, scores: list[float]) -> Any:
    """What the aggregation logs as ``misses`` on each of the plugin's resamples of the line scores."""
    picks = bootstrap_indices(len(scores), RESAMPLES, f"{cell}:acc")
    return [len(row) - sum(scores[i] for i in row) for row in picks]


def test_an_aggregations_logged_metric_gets_its_columns_interval_or_a_bootstrap_one(
        project: Project, pytester: pytest.Pytester) -> None:
    """The eval flow's Python aggregation logs accuracy (the mean of its per-row score: Wilson, like score) and
    misses (a count, no column's mean): that one is re-run on 200 seeded resamples of the 20 lines and gets a
    percentile bound. variant_1's 3 misses of 20 do not clear "<= 5 at 95%" (upper bound 6); variant_0's 0 do."""
    project.dag_flow()
    project.eval_flow()
    project.write("flows/ev/aggregate.py", MISSES_AGGREGATE_PY)
    project.data("small", MOSTLY_POSITIVE)
    _experiment(project, "small", 'variants:\n  nodes:\n    classify: "*"\nthresholds:\n'
                                  '  accuracy: ">= 0.6 at 95%"\n  acc.misses: "<= 5 at 95%"\n')
    pytester.makeconftest(COUNTING_CONFTEST)
    result = run(pytester, "--promptflow-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.no_fnmatch_line("*Traceback*")
    cell_id = "clf-classify=variant_1-small"
    scores = [1.0] * 17 + [0.0] * 3
    one_sided = bootstrap_interval(3.0, _resampled_misses(cell_id, scores), 0.95, sides=1)
    assert one_sided.high > 5
    result.stdout.fnmatch_lines([f"*1 of 2 thresholds failed for cell {cell_id} (20 rows)*",
                                 f"*acc.misses*3*<= 5 at 95%*{one_sided.high:.4g} (upper, 95%)*FAIL*"])
    cells = {cell["cell"]: cell for cell in _cells(pytester)["small"]["flow_cells"]}
    intervals = cells[cell_id]["intervals"]
    assert [intervals["accuracy.ci_low"], intervals["accuracy.ci_high"]] == pytest.approx(
        [wilson(17, 20).low, wilson(17, 20).high])  # the mean of score: score's own interval
    two_sided = bootstrap_interval(3.0, _resampled_misses(cell_id, scores), 0.95)
    assert [intervals["misses.ci_low"], intervals["misses.ci_high"]] == pytest.approx([two_sided.low, two_sided.high])
    # the resamples' log_metric calls reached no logger but the executor's: one accuracy and misses per cell
    assert json.loads((pytester.path / "logged.json").read_text()) == ["accuracy", "misses"] * 2
