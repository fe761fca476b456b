import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_judged(flow_run):
    result = flow_run.evaluate("judges/relevance.prompty",
                               mapping={"question": "${data.question}", "answer": "${run.outputs.answer}"})
    assert result.metrics["relevance"] >= 0  # the embedded model is weak: only that the judge scored
    assert result.metrics["error_rate"] == 0
