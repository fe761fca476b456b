"""An evaluation flow's aggregation on bootstrap resamples: called in this thread, it logs what promptflow's executor
logs on every resample (chained nodes, typed inputs, literals, a node that raises); and it is re-run only for a
logged metric whose interval reads its resamples."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import AGGREGATE_PY, EXPERIMENT, Project, run

from pytest_promptflow.aggregation import RESAMPLES, aggregation_metrics, in_this_thread
from pytest_promptflow.flows import load_target
from pytest_promptflow.stats import bootstrap_indices

FLOW = """\
inputs:
  groundtruth:
    type: string
  prediction:
    type: string
  weight:
    type: int
outputs:
  score:
    type: int
    reference: ${line_score.output}
nodes:
- name: line_score
  type: python
  source:
    type: code
    path: line_score.py
  inputs:
    groundtruth: ${inputs.groundtruth}
    prediction: ${inputs.prediction}
- name: aggregate
  type: python
  source:
    type: code
    path: aggregate.py
  inputs:
    scores: ${line_score.output}
    weight: ${inputs.weight}
  aggregation: true
- name: shift
  type: python
  source:
    type: code
    path: shift.py
  inputs:
    summary: ${aggregate.output}
    offset: 1
  aggregation: true
"""

LINE_SCORE = '''\
from promptflow.core import tool


@tool
def line_score(groundtruth: str, prediction: str) -> int:
    return int(groundtruth == prediction)
'''

#: weight arrives as the text "3" and is an int by the flow's input type; a resample with no miss raises after
#: logging, so the node after it (shift) logs nothing there
AGGREGATE = '''\
from typing import List

from promptflow.core import log_metric, tool


@tool
def aggregate(scores: List[int], weight: List[int]) -> dict:
    misses = (len(scores) - sum(scores)) * weight[0]
    log_metric("misses", misses)
    log_metric("accuracy", sum(scores) / len(scores))
    if not misses:
        raise ValueError("no misses")
    return {"misses": misses}
'''

SHIFT = '''\
from promptflow.core import log_metric, tool


@tool
def shift(summary: dict, offset: int) -> None:
    log_metric("shifted", summary["misses"] + offset)
'''

ROWS = [{"groundtruth": "a", "prediction": "a" if i < 6 else "b", "weight": "3"} for i in range(8)]


def _flow(folder: Path) -> Path:
    for name, text in {"flow.dag.yaml": FLOW, "line_score.py": LINE_SCORE, "aggregate.py": AGGREGATE,
                       "shift.py": SHIFT}.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_each_resample_called_in_this_thread_logs_what_the_executor_logs(
        tmp_path: Path, _promptflow_loaded: None) -> None:
    target = load_target(_flow(tmp_path), tmp_path)
    executor = target.promptflow_executor({}, {}, {})
    runner = target.executor({}, {}, {})
    outcomes = [runner.run(row) for row in ROWS]
    lines = [outcome.aggregation_input for outcome in outcomes]
    names = runner.input_names
    direct = in_this_thread(executor)
    assert direct is not None
    samples = bootstrap_indices(len(ROWS), RESAMPLES, "cell:ev")
    for picks in samples:
        inputs, lines_in = [ROWS[i] for i in picks], [lines[i] for i in picks]
        in_executor, found = aggregation_metrics(executor, names, inputs, lines_in), direct(names, inputs, lines_in)
        if found is None:  # a node raised: the executor's call says what was logged, as it did for the node
            assert "shifted" not in in_executor
        else:
            assert found == in_executor
    assert runner.aggregate is not None
    logged = runner.aggregate(ROWS, lines, seed="cell:ev", site="aggregation")
    assert logged.metrics == {"misses": 6.0, "accuracy": 0.75, "shifted": 7.0}
    assert logged.replicates == {  # the previous path: the executor on every resample
        name: tuple(found[name] for found in (aggregation_metrics(executor, names, [ROWS[i] for i in picks],
                                                                  [lines[i] for i in picks]) for picks in samples)
                    if name in found)
        for name in logged.metrics}
    assert RESAMPLES == len(logged.replicates["misses"]) > len(logged.replicates["shifted"])  # some had no miss


COUNTING_AGGREGATE = AGGREGATE_PY.replace(
    "    accuracy = sum(scores) / len(scores)\n",
    "    accuracy = sum(scores) / len(scores)\n"
    "    with open(CALLS, 'a') as calls:\n"
    "        calls.write('call\\n')\n")


def test_an_aggregation_whose_metric_is_a_columns_mean_runs_once_per_cell(project: Project,
                                                                        pytester: pytest.Pytester) -> None:
    """accuracy is the mean of the per-row score: its interval is score's (Wilson), so no resample is needed."""
    calls = pytester.path / "calls.txt"
    project.dag_flow()
    project.eval_flow()
    project.write("flows/ev/aggregate.py", COUNTING_AGGREGATE.replace("CALLS", repr(str(calls))))
    project.data()
    project.experiment(EXPERIMENT)
    result = run(pytester, "--promptflow-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    assert calls.read_text().splitlines() == ["call", "call"]  # one per cell: classify variant_0, variant_1
