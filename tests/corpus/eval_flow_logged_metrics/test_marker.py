import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_matched(flow_run):
    result = flow_run.evaluate("eval", mapping={"answer": "${run.outputs.answer}", "truth": "${data.truth}"})
    assert list(result.evaluation.metrics)[:3] == ["exact_match_rate", "partial_match_rate", "error_rate"]
    assert result.metrics["exact_match_rate"] == 0.5
    assert result.metrics["eval.error_rate"] == 0.25  # the evaluator's own, under its name
    assert result.metrics["error_rate"] == 0  # the run's: every row of the flow ran
    # the Python aggregation re-run on resampled lines gives its logged metrics an interval
    interval = result.metrics["exact_match_rate"].ci()
    assert interval is not None and interval.low <= 0.5 <= interval.high
    flow_run.expect("partial_match_rate >= 0 at 95%")
