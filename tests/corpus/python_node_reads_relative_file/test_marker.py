import os

import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_reads_its_files(flow_run):
    assert flow_run.metrics["error_rate"] == 0
    assert [row.outputs["category"] for row in flow_run.rows][-2:] == ["neutral", "negative"]
    result = flow_run.evaluate("eval", mapping={"category": "${run.outputs.category}", "label": "${data.label}"})
    assert result.metrics["correct"] == 1


def test_working_directory_is_back():
    assert os.path.isfile("data.jsonl")  # pytest's working directory (the rootdir) again after the runs
