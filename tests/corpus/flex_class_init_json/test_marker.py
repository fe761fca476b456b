import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_answers(flow_run):
    result = flow_run.evaluate("eval", mapping={"answer": "${run.outputs.answer}", "truth": "${data.truth}"})
    assert result.metrics["answer_rate"] >= 0.6
    assert flow_run.metrics["error_rate"] == 0
