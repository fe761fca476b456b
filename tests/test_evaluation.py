"""Evaluators: aggregating per-row scores into metrics (pure), a .prompty judge, an evaluation flow's
logged metrics and its own error_rate, and a template evaluator folder with no flow file."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
from conftest import WITH_BOOM, Project, outcomes, run
from fault_endpoint import FaultEndpoint

from pytest_promptflow.evaluation import flatten, judge_scores, means, score_columns

# the shape azure-ai-evaluation 1.18's RougeScoreEvaluator returns for one row
ROUGE_ROW = {
    "rouge": 0.5, "rouge_score": 0.5, "rouge_passed": True, "rouge_result": "pass", "rouge_threshold": 0.5,
    "rouge_properties": {"rouge_precision": 0.25, "rouge_recall": 1.0, "rouge_recall_result": "pass"},
}


def test_nested_scores_are_flattened_one_level():
    flat = flatten(ROUGE_ROW)
    assert flat["rouge_recall"] == 1.0 and flat["rouge_precision"] == 0.25
    assert "rouge_properties" not in flat


def test_means_pass_rates_and_what_is_left_out():
    rows = [flatten(ROUGE_ROW), flatten({**ROUGE_ROW, "rouge": 0.0, "rouge_result": "fail",
                                          "rouge_properties": {"rouge_recall": 0.5}}), None]
    metrics = means(score_columns(rows))
    assert metrics["rouge"] == 0.25
    assert metrics["rouge_recall"] == 0.75
    assert metrics["rouge_pass_rate"] == 0.5
    assert "rouge_passed" not in metrics and "rouge_threshold" not in metrics


# --- a .prompty judge: its answer per row read as a score ----------------------------------------


def test_judge_answers_become_scores():
    """A number (even as text or tagged as azure-ai-evaluation's judges tag it), a JSON object's fields,
    or else the text itself, kept as a score that no mean counts."""
    assert judge_scores("judge", " 5\n") == {"judge": 5.0}
    assert judge_scores("judge", "<S0>thinking</S0><S1>on topic</S1><S2>4</S2>") == {"judge": 4.0}
    assert judge_scores("judge", '{"score": "3", "explanation": "close"}') == {"score": 3.0, "explanation": "close"}
    assert judge_scores("judge", {"apology": 1}) == {"apology": 1}
    assert judge_scores("judge", "Red") == {"judge": "Red"}
    assert judge_scores("judge", "4 - on topic") == judge_scores("judge", "4/5") == {"judge": 4.0}
    assert judge_scores("judge", "4.5. Close") == {"judge": 4.5}
    assert judge_scores("judge", "1st place") == {"judge": "1st place"}  # a word, not a score
    assert means(score_columns([judge_scores("judge", "5"), judge_scores("judge", "Red"),
                                judge_scores("judge", "4")])) == {
        "judge": 4.5}


JUDGE = """\
---
name: judge
model:
  api: chat
  configuration:
    type: azure_openai
    azure_deployment: gpt-35-turbo
    connection: aoai
  parameters:
    temperature: 0.0
inputs:
  verdict:
    type: string
---
user:
{{verdict}}
"""

#: the judge's answers (the endpoint answers with the message): a number, a tagged number, text, and a
#: call that always fails
VERDICTS = ["5", "<S1>fine</S1><S2>3</S2>", "Red", "[always:500] never answered"]

JUDGED_EXPERIMENT = """\
name: judged
flow: ../flows/passthrough
datasets:
- name: verdicts
  source: ../data/verdicts.jsonl
  mappings:
    verdict: ${data.verdict}
evaluators:
- name: judge
  flow: ../flows/judge.prompty
  datasets:
  - name: verdicts
    mappings:
      verdict: ${run.outputs.verdict}
thresholds:
  judge: "== 4"
  error_rate: "<= 0"
"""

JUDGED_TESTS = """\
import pytest


@pytest.mark.promptflow(flow="flows/passthrough", data="data/verdicts.jsonl")
def test_judged(flow_run):
    result = flow_run.evaluate("flows/judge.prompty", mapping={"verdict": "${run.outputs.verdict}"})
    assert [dict(s) if s else None for s in result.scores] == [{"judge": 5.0}, {"judge": 3.0}, {"judge": "Red"}, None]
    assert result.evaluation.errors[3].startswith("JudgeFailed: ")
    assert result.metrics["judge"] == 4.0
    assert result.metrics["judge.llm.calls"] >= 4


@pytest.mark.promptflow(flow="flows/passthrough", data="data/verdicts.jsonl")
def test_unknown_input(flow_run):
    flow_run.evaluate("flows/judge.prompty", mapping={"nope": "${run.outputs.verdict}"})
"""


@pytest.fixture
def echo_endpoint() -> Iterator[FaultEndpoint]:
    """An endpoint that answers with the message itself, so the judge answers what the row says."""
    with FaultEndpoint(prefix="") as server:
        yield server


def test_a_prompty_judge_in_both_front_ends(project: Project, echo_endpoint: FaultEndpoint,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOAI_API_KEY", "test-key-not-secret")
    monkeypatch.setenv("AOAI_API_BASE", echo_endpoint.url)
    project.pytester.makeini("[pytest]\npromptflow_llm_backoff = 0.01\n")
    project.write("flows/judge.prompty", JUDGE)
    project.write("flows/passthrough/flow.flex.yaml", "entry: passthrough:run\n")
    project.write("flows/passthrough/passthrough.py",
                  "def run(verdict: str) -> dict:\n    return {'verdict': verdict}\n")
    project.data("verdicts", [{"verdict": v} for v in VERDICTS])
    project.experiment(JUDGED_EXPERIMENT)
    project.pytester.makepyfile(test_judged=JUDGED_TESTS)
    result = run(project.pytester, "-p", "no:randomly", "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 2, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_judged.py:*: evaluator judge has no input nope; its inputs are: verdict"])
    result.stdout.no_fnmatch_line("*Traceback*")
    document = json.loads((project.path / "report" / "report.json").read_text())
    assert document["flows"][0]["primary_metric"] == "judge"


# --- an evaluation flow's logged metrics first; an evaluator's error_rate under its name ---------

#: the aggregation node of conftest's evaluation flow, logging recall, then precision (neither first by
#: name), then its own error_rate of 0.5
LOG_PY = '''\
from typing import List

from promptflow.core import log_metric, tool


@tool
def log(scores: List[int]) -> dict:
    for name, value in (("recall", 0.9), ("precision", 0.8), ("error_rate", 0.5)):
        log_metric(name, value)
    return {}
'''

LOGGING_EXPERIMENT = """\
name: logged
flow: ../flows/clf
datasets:
- name: with_boom
  source: ../data/with_boom.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: ev
  flow: ../flows/ev
  datasets:
  - name: with_boom
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.category}"
thresholds:
  recall: ">= 0.9"
  error_rate: "== 0.2"
  ev.error_rate: "== 0.5"
"""

LOGGING_TESTS = """\
import pytest


def row_errors(prediction):
    return {"score": 1, "error_rate": 1.0}


@pytest.mark.promptflow(flow="flows/clf", data="data/with_boom.jsonl")
def test_logged(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                    "prediction": "${run.outputs.category}"})
    assert list(result.evaluation.metrics)[:4] == ["recall", "precision", "error_rate", "score"]
    assert result.metrics["error_rate"] == 0.2  # the run's: 1 of 5 rows raised
    assert result.metrics["ev.error_rate"] == 0.5
    per_row = flow_run.evaluate(row_errors, mapping={"prediction": "${run.outputs.category}"})
    assert per_row.metrics["error_rate"] == 0.2
    # its 4 answered rows say 1.0; the row whose flow raised scores the worst value, for a rate 1 at least
    assert per_row.metrics["row_errors.error_rate"] == (4 * 1.0 + 1.0) / 5
    assert per_row.metrics["row_errors.score"] == (4 * 1 + 0) / 5
"""


def test_logged_metrics_lead_and_an_evaluators_error_rate_keeps_its_name(project: Project) -> None:
    project.dag_flow()
    project.eval_flow()
    project.write("flows/ev/aggregate.py", LOG_PY)
    project.data("with_boom", WITH_BOOM)
    project.experiment(LOGGING_EXPERIMENT)
    project.pytester.makepyfile(test_logged=LOGGING_TESTS)
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 4}, result.stdout.str()  # 3 cells of the experiment, 1 test
    document = json.loads((project.path / "report" / "report.json").read_text())
    flow = document["flows"][0]
    assert flow["primary_metric"] == "recall"  # not the mean of the per-row `score`
    for cell in flow["cells"]:
        metrics = list(cell["metrics"])
        assert cell["metrics"]["error_rate"] == 0.2 and cell["metrics"]["ev.error_rate"] == 0.5
        assert metrics.index("ev.recall") < metrics.index("ev.precision") < metrics.index("ev.score")


# --- a template evaluator folder with no flow file: refused alone, in one line -------------------

REFUSING_EXPERIMENT = """\
name: template
flow: ../flows/flexfn
datasets:
- name: small
  source: ../data/small.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: custom
  flow: ../flows/eval-flow
  datasets:
  - name: small
    mappings:
      prediction: "${run.outputs.category}"
- name: acc
  flow: ../flows/ev
  datasets:
  - name: small
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.category}"
thresholds:
  accuracy: ">= 0.75"
"""


def test_an_evaluator_folder_without_a_flow_file_is_refused_alone(project: Project) -> None:
    project.flex_function()
    project.eval_flow()
    project.write("flows/eval-flow/eval_custom.py", "def eval_use_case(run_name, data_id, column_mapping):\n"
                                                    "    print(run_name)\n")
    project.data()
    project.experiment(REFUSING_EXPERIMENT)
    project.experiment(REFUSING_EXPERIMENT + '  custom.score: ">= 1"\n', name="experiment_gated.yaml")
    project.pytester.makepyfile(test_refused="""
        import pytest


        @pytest.mark.promptflow(flow="flows/flexfn", data="data/small.jsonl")
        def test_refused(flow_run):
            flow_run.evaluate("flows/eval-flow")
    """)
    result = run(project.pytester, "-rw")
    assert outcomes(result) == {"passed": 1, "failed": 2}, result.stdout.str()
    refusal = ("evaluator custom: folder ../flows/eval-flow has no flow file (it holds eval_custom.py), so it is "
               "not run; add ../flows/eval-flow/flow.flex.yaml with 'entry: eval_custom:<function or class>'*")
    result.stdout.fnmatch_lines([f"*exp/experiment.yaml:9: PytestWarning: {refusal}"])
    result.stdout.fnmatch_lines([f"*exp/experiment_gated.yaml:*: threshold on unknown metric 'custom.score'; "
                                 f"*exp/experiment_gated.yaml:9: {refusal}"])
    result.stdout.fnmatch_lines(["*test_refused.py:*: evaluator eval-flow: folder flows/eval-flow has no flow file*"])
    result.stdout.no_fnmatch_line("*Traceback*")
