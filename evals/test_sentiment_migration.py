"""Migration parity: flows/sentiment against its agent-framework twin, flows/sentiment_maf.

The twin runs on the same rows, evaluators and store, and the plugin checks each request's prompt and
parameters, output agreement per row, every metric within a margin (``promptflow_twin_margin`` in
pyproject.toml: what these rows can show), and error rate, latency and cost (issue 15, item 3).
"""

import pytest

from test_sentiment import EVAL_MAPPING, MIN_ACCURACY, SENTIMENT

TWIN = "maf:flows/sentiment_maf/workflow.py:create_workflow"


@pytest.mark.promptflow(flow="flows/sentiment", variants={"classify": "variant_0"}, twin=TWIN, **SENTIMENT)
def test_migration_keeps_accuracy(flow_run):
    result = flow_run.evaluate("flows/sentiment_eval", mapping=EVAL_MAPPING)
    assert result.metrics["accuracy"] >= MIN_ACCURACY[flow_run.cell.dataset.name]
