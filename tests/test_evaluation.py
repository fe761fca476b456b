"""Aggregating per-row scores into metrics (pure)."""

from __future__ import annotations

from pytest_promptflow.evaluation import aggregate, flatten

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
    metrics = aggregate(rows)
    assert metrics["rouge"] == 0.25
    assert metrics["rouge_recall"] == 0.75
    assert metrics["rouge_pass_rate"] == 0.5
    assert "rouge_passed" not in metrics and "rouge_threshold" not in metrics
