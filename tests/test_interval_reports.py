"""Intervals where a user reads them: clustered by a ``cluster`` column, in the terminal table and the HTML page,
for an aggregation's logged metric, and in ``pytest-promptflow plan``.

Every flow here is pure Python (see conftest.py), so no model server is started.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Project, run

from pytest_promptflow.stats import mean_interval, wilson

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
    document = json.loads((pytester.path / folder / "report.json").read_text(encoding="utf-8"))
    return {cell["dataset"]: cell for flow in document["flows"] for cell in flow["cells"]}


def test_a_cluster_column_widens_the_interval_of_rows_that_move_together(
        project: Project, pytester: pytest.Pytester) -> None:
    """12 of 20 right: Wilson takes 20 independent rows; by cluster there are 5 draws, so the interval widens
    and the same ``at 95%`` gate that passes on the rows fails on the clusters."""
    project.dag_flow()
    project.eval_flow()
    project.data("clustered", CLUSTERED)
    project.data("plain", UNCLUSTERED)
    gate = 'thresholds:\n  score: ">= 0.2 at 95%"\n'
    _experiment(project, "clustered", gate, folder="a")
    _experiment(project, "plain", gate, folder="b")
    result = run(pytester, "--promptflow-report", "out", "-k", "variant_0 and plain-")
    result.assert_outcomes(passed=1, failed=1)
    cells = _cells(pytester)
    plain, clustered = (cells[name]["intervals"] for name in ("plain", "clustered"))
    expected_plain = wilson(12, 20)
    scores = [1.0] * 12 + [0.0] * 8
    expected = mean_interval(scores, clusters=[row["cluster"] for row in CLUSTERED])
    assert [plain["score.ci_low"], plain["score.ci_high"]] == pytest.approx([expected_plain.low, expected_plain.high])
    assert [clustered["score.ci_low"], clustered["score.ci_high"]] == pytest.approx([expected.low, expected.high])
    width = {name: cells[name]["intervals"]["score.ci_high"] - cells[name]["intervals"]["score.ci_low"]
             for name in cells}
    assert width["clustered"] > 1.5 * width["plain"]
    assert clustered["score.n"] == plain["score.n"] == 20
    # the terminal table: the gated metric with its 95% interval
    result.stdout.fnmatch_lines([
        "*cell*accuracy*score*error_rate*verdict",
        f"*variant_0-decorate=plain-clustered*0.6 *0.6! [[]{expected.low:.2g}, {expected.high:.2g}] *0 *FAIL score*",
        f"*variant_0-decorate=plain-plain*0.6 *0.6 [[]{expected_plain.low:.2g}, {expected_plain.high:.2g}] *0 *ok",
    ])
