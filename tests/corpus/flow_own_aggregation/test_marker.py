import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_accuracy(flow_run):
    assert flow_run.metrics["accuracy"] == 0.75
    assert flow_run.metrics["rows"] == 4
    # the flow's own aggregation (a Python node) is re-run on resampled rows too: its metric has an interval
    own = flow_run.metrics["accuracy"].ci()
    assert own is not None and own.method == "percentile" and own.low < 0.75 <= own.high
    # the class flow as an evaluator: its __aggregate__ gives the evaluation's metric
    result = flow_run.evaluate("flex", mapping={"groundtruth": "${data.groundtruth}",
                                                "prediction": "${data.prediction}"})
    assert result.metrics["exact_rate"] == 0.75
    # its __aggregate__ logs the mean of its per-row output: the metric gets that column's (Wilson) interval
    interval = result.metrics["exact_rate"].ci()
    assert interval is not None and interval.method == "wilson-cc" and interval.low < 0.75 <= interval.high


@pytest.mark.promptflow(flow="flex", data="data.jsonl")
def test_flex_exact_rate(flow_run):
    assert flow_run.metrics["exact_rate"] == 0.75
    assert flow_run.metrics["exact_rate"].ci() is not None  # a flex __aggregate__ under test is resampled too
