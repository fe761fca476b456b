import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_accuracy(flow_run):
    assert flow_run.metrics["accuracy"] == 0.75
    assert flow_run.metrics["rows"] == 4


@pytest.mark.promptflow(flow="flex", data="data.jsonl")
def test_flex_accuracy(flow_run):
    assert flow_run.metrics["accuracy"] == 0.75
