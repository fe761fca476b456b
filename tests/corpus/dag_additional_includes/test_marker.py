import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_words(flow_run):
    assert [row.outputs["words"] for row in flow_run.rows] == [3, 3, 1, 5]
    result = flow_run.evaluate("eval", mapping={"words": "${run.outputs.words}", "text": "${data.text}"})
    assert result.metrics["exact"] == 1
