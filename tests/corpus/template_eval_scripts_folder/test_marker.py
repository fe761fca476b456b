import pytest

from pytest_promptflow.errors import SpecError


@pytest.mark.promptflow(flow="flows/basic", data="data.jsonl")
def test_use_case(flow_run):
    with pytest.raises(SpecError, match="folder flows/eval-flow has no flow file"):
        flow_run.evaluate("flows/eval-flow", mapping={"prediction": "${run.outputs.answer}"})
    result = flow_run.evaluate("flows/eval-match",
                               mapping={"answer": "${run.outputs.answer}", "truth": "${data.truth}"})
    assert result.metrics["exact_match_rate"] >= 0.5
