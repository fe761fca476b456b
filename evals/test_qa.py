"""Question answering from a context, scored with azure-ai-evaluation's F1 and ROUGE evaluators."""

import pytest
from azure.ai.evaluation import F1ScoreEvaluator, RougeScoreEvaluator, RougeType

QA = dict(flow="flows/qa", data="evals/data/qa.jsonl", variants={"answer": "*"})
MAPPING = {"response": "${run.outputs.answer}", "ground_truth": "${data.ground_truth}"}


@pytest.mark.promptflow(**QA)
def test_f1(flow_run):
    result = flow_run.evaluate(F1ScoreEvaluator(), mapping=MAPPING)
    assert result.metrics["f1_score"] >= 0.25  # measured 0.334 (variant_1) to 0.575 (variant_0)


@pytest.mark.promptflow(**QA)
def test_rouge_l_recall(flow_run):
    result = flow_run.evaluate(RougeScoreEvaluator(RougeType.ROUGE_L), mapping=MAPPING)
    assert result.metrics["rouge_recall"] >= 0.6  # measured 0.727 to 0.742
    assert flow_run.metrics["error_rate"] == 0
