"""Rows whose flow failed count: they score the worst value in every evaluator's means (a callable's, an
evaluation flow's per-row outputs and its logged aggregation, a pass/fail column), so a variant that crashes on
hard rows no longer beats one that answers them wrongly. Rows carry an identity that pairs them across runs."""

from __future__ import annotations

import json

from conftest import EXPERIMENT, WITH_BOOM, Project, outcomes, run

from pytest_promptflow.config import DatasetSpec
from pytest_promptflow.engine import row_identity
from pytest_promptflow.evaluation import worst_scores

# --- the worst value, pure -------------------------------------------------------------------------


def test_the_worst_value_is_0_or_the_lowest_below_it_and_fail_for_a_pass_fail_column():
    scores = [{"match": 1.0, "judge": 4, "delta": -0.5, "ok_result": "pass", "ok_passed": True, "ok_threshold": 3},
              {"match": 0.5, "judge": 2, "delta": -2.0, "ok_result": "fail", "ok_passed": False, "reason": "x"},
              None]
    assert worst_scores(scores) == {"match": 0.0, "judge": 0.0, "delta": -2.0, "ok_result": "fail",
                                    "ok_passed": False}


def test_the_worst_of_a_lower_is_better_score_is_the_highest_and_at_least_1_for_a_rate():
    scores = [{"error_rate": 0.2, "latency.p95": 3.0}, {"error_rate": 0.0, "latency.p95": 7.5}, None]
    assert worst_scores(scores) == {"error_rate": 1.0, "latency.p95": 7.5}


# --- row identity, pure ----------------------------------------------------------------------------


def test_identity_is_the_id_column_else_a_hash_of_the_columns_the_flow_reads():
    mapped = DatasetSpec(name="d", source="d.jsonl", mappings={"question": "${data.q}", "style": "short"})
    assert row_identity(mapped, {"id": 7, "q": "why?"}, ["question"]) == "7"
    one = row_identity(mapped, {"q": "why?", "label": "a"}, ["question", "style"])
    assert one == row_identity(mapped, {"label": "b", "q": "why?"}, ["question", "style"])  # label is not read
    assert one != row_identity(mapped, {"q": "how?", "label": "a"}, ["question", "style"])
    by_name = DatasetSpec(name="d", source="d.jsonl")  # no mappings: the columns named like the flow's inputs
    assert row_identity(by_name, {"q": "why?", "x": 1}, ["q"]) == row_identity(by_name, {"q": "why?", "x": 2}, ["q"])


# --- a flaky flow scored three ways ------------------------------------------------------------------

FLAKY_TESTS = """
import pytest


def classify(text):
    if "boom" in text:
        raise ValueError("boom row")
    return {"category": "positive" if "good" in text else "negative"}


def same(prediction, label):
    return {"match": float(prediction == label)}


def verdict(prediction, label):
    return {"same_result": "pass" if prediction == label else "fail"}


MAPPING = {"prediction": "${run.outputs.category}", "label": "${data.label}"}


@pytest.mark.promptflow(flow=classify, data="data/with_boom.jsonl")
def test_flaky(flow_run):
    # 4 rows answered, all right; row 4 raised: it scores the worst value, so every mean is 4 of 5
    assert [row.failed for row in flow_run.rows] == [False] * 4 + [True]
    scored = flow_run.evaluate(same, mapping=MAPPING)
    assert scored.metrics["match"] == pytest.approx(4 / 5)
    assert scored.scores[4] == {"match": 0.0} and scored.evaluation.errors[4] == "flow row failed"
    assert "1 of 5 rows failed" in scored.metrics.note
    passed = flow_run.evaluate(verdict, mapping=MAPPING)
    assert passed.metrics["same_pass_rate"] == pytest.approx(4 / 5)
    assert passed.scores[4] == {"same_result": "fail"}
    flow = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                  "prediction": "${run.outputs.category}"})
    assert flow.metrics["accuracy"] == pytest.approx(4 / 5)  # its aggregation's log_metric got the failed row
    assert flow.metrics["ev.score"] == pytest.approx(4 / 5)  # the mean of its per-row output
    assert flow.evaluation.note == ""
    words = flow_run.evaluate("flows/words", mapping={"groundtruth": "${data.label}",
                                                      "prediction": "${run.outputs.category}"})
    assert words.metrics["accuracy"] == 1.0  # an aggregation of text: the failed row cannot be given to it
    assert "1 rows whose flow failed are left out, as it takes per-row values" in words.metrics.note
    flex = flow_run.evaluate("flows/grader", mapping={"groundtruth": "${data.label}",
                                                      "prediction": "${run.outputs.category}"})
    assert flex.metrics["exact_rate"] == pytest.approx(4 / 5)  # its __aggregate__ got the failed row too
    reads = flow_run.evaluate("flows/reads", mapping={"groundtruth": "${data.label}",
                                                      "prediction": "${run.outputs.category}"})
    assert reads.metrics["accuracy"] == 1.0  # it reads the predictions, which the failed row does not have
    assert "1 rows whose flow failed are left out, as it reads the flow's outputs" in reads.metrics.note
    assert reads.metrics["reads.score"] == pytest.approx(4 / 5)  # its per-row means count the row all the same
"""

#: an evaluation flow whose aggregation reads the predictions too
READS_AGGREGATE_PY = '''\
from typing import List

from promptflow.core import log_metric, tool


@tool
def aggregate(scores: List[int], predictions: List[str]) -> dict:
    log_metric("accuracy", sum(scores) / len(predictions))
    return {}
'''

#: an evaluation flow whose per-row output is text ("right"/"wrong"): its aggregation counts "right"
WORDS_FLOW = """\
inputs:
  groundtruth:
    type: string
  prediction:
    type: string
outputs:
  word:
    type: string
    reference: ${judge.output}
nodes:
- name: judge
  type: python
  source:
    type: code
    path: judge.py
  inputs:
    groundtruth: ${inputs.groundtruth}
    prediction: ${inputs.prediction}
- name: count
  type: python
  source:
    type: code
    path: count.py
  inputs:
    words: ${judge.output}
  aggregation: true
"""

WORDS_PY = {
    "judge.py": '''\
from promptflow.core import tool


@tool
def judge(groundtruth: str, prediction: str) -> str:
    return "right" if groundtruth == prediction else "wrong"
''',
    "count.py": '''\
from typing import List

from promptflow.core import log_metric, tool


@tool
def count(words: List[str]) -> dict:
    log_metric("accuracy", words.count("right") / len(words))
    return {}
''',
}


#: a flex evaluation flow: a class whose __aggregate__ gets the rows' outputs (as promptflow's eval-code-quality)
GRADER_PY = """\
from typing import List


class Grader:
    def __call__(self, groundtruth: str, prediction: str) -> dict:
        return {"correct": int(groundtruth == prediction)}

    def __aggregate__(self, line_results: List[dict]) -> dict:
        return {"exact_rate": sum(line.correct for line in line_results) / len(line_results)}
"""


def test_a_flaky_flows_failed_row_counts_as_worst_for_callables_pass_fail_and_evaluation_flows(
        project: Project) -> None:
    project.write("flows/grader/flow.flex.yaml", "entry: grader:Grader\n")
    project.write("flows/grader/grader.py", GRADER_PY)
    project.eval_flow()
    project.eval_flow("reads")
    reads = (project.path / "flows/reads/flow.dag.yaml").read_text()
    project.write("flows/reads/flow.dag.yaml", reads.replace("    scores: ${line_score.output}\n",
                                                             "    scores: ${line_score.output}\n"
                                                             "    predictions: ${inputs.prediction}\n"))
    project.write("flows/reads/aggregate.py", READS_AGGREGATE_PY)
    project.write("flows/words/flow.dag.yaml", WORDS_FLOW)
    for name, text in WORDS_PY.items():
        project.write(f"flows/words/{name}", text)
    project.data("with_boom", WITH_BOOM)
    project.pytester.makepyfile(test_flaky=FLAKY_TESTS)
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    rows = json.loads((project.path / "report" / "report.json").read_text())["flows"][0]["cells"][0]["rows"]
    assert rows[4]["error"] == "ValueError: boom row"  # why it scored worst stays in the report
    assert rows[4]["scores"]["same.match"] == 0.0 and rows[4]["scores"]["ev.score"] == 0.0
    assert len({row["id"] for row in rows}) == 5 and all(len(row["id"]) == 16 for row in rows)


# --- a crashing variant scores lower than one that answers wrongly -----------------------------------

#: classify: variant "crash" raises on the hard rows, variant "answer" answers them by keyword (one right)
VARIANT_FLOW = """\
inputs:
  text:
    type: string
outputs:
  category:
    type: string
    reference: ${classify.output}
nodes:
- name: classify
  use_variants: true
node_variants:
  classify:
    default_variant_id: crash
    variants:
      crash:
        node:
          type: python
          source:
            type: code
            path: classify.py
          inputs:
            text: ${inputs.text}
            crash_on_hard: true
      answer:
        node:
          type: python
          source:
            type: code
            path: classify.py
          inputs:
            text: ${inputs.text}
            crash_on_hard: false
"""

CLASSIFY_PY = '''\
from promptflow.core import tool


@tool
def classify(text: str, crash_on_hard: bool) -> str:
    if crash_on_hard and text.startswith("hard:"):
        raise ValueError("cannot answer a hard row")
    return "positive" if "good" in text else "negative"
'''

#: 3 easy rows both variants get right; 2 hard ones: the keyword answer gets the first wrong, the second right
ROWS = [
    {"id": "e1", "text": "a good day", "label": "positive"},
    {"id": "e2", "text": "a bad day", "label": "negative"},
    {"id": "e3", "text": "good food", "label": "positive"},
    {"id": "h1", "text": "hard: not good at all", "label": "negative"},
    {"id": "h2", "text": "hard: good enough", "label": "positive"},
]


def test_a_variant_that_crashes_on_hard_rows_scores_lower_than_one_that_answers_them(project: Project) -> None:
    project.write("flows/clf/flow.dag.yaml", VARIANT_FLOW)
    project.write("flows/clf/classify.py", CLASSIFY_PY)
    project.eval_flow()
    project.data("small", ROWS)
    project.experiment(EXPERIMENT.replace("error_rate: \"<= 0.0\"", "").replace(">= 0.75", ">= 0.7"))
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    # crash: 3 easy rows right, 2 crashed rows at the worst value 0 (it read 3/3 = 1.0 when they were left out)
    result.stdout.fnmatch_lines(["*thresholds failed for cell clf-classify=crash-small (5 rows, 2 failed and "
                                 "scored worst)*", "*accuracy*0.6*>= 0.7*FAIL*"])
    flow = json.loads((project.path / "report" / "report.json").read_text())["flows"][0]
    accuracy = {cell["config"]: cell["metrics"]["accuracy"] for cell in flow["cells"]}
    assert accuracy == {"classify=crash": (3 + 0 + 0) / 5, "classify=answer": (3 + 0 + 1) / 5}
    assert flow["best"] == "classify=answer"
    assert [row["id"] for row in flow["cells"][0]["rows"]] == ["e1", "e2", "e3", "h1", "h2"]


def test_rows_that_share_an_identity_are_noted(project: Project) -> None:
    project.data("twice", [{"text": "a good day", "label": "positive"}, {"text": "a good day", "label": "negative"},
                           {"text": "awful", "label": "negative"}])
    project.pytester.makepyfile(test_twice="""
        import pytest

        def classify(text):
            return {"category": "positive" if "good" in text else "negative"}

        @pytest.mark.promptflow(flow=classify, data="data/twice.jsonl")
        def test_twice(flow_run):
            ids = [row.identity for row in flow_run.rows]
            assert ids[0] == ids[1] != ids[2]  # the label is not read: the two first rows are one input
            assert "2 rows share their identity with another row" in flow_run.metrics.note
    """)
    assert outcomes(run(project.pytester)) == {"passed": 1}
