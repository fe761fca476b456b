"""A flex flow (class entry with init config) and a .prompty, each checked on its own dataset."""

import pytest
from azure.ai.evaluation import F1ScoreEvaluator


@pytest.mark.promptflow(
    flow="flows/summarize_flex",
    data="evals/data/summaries.jsonl",
    init={"connection": "aoai", "max_words": 25},
)
def test_summaries_stay_short_and_on_topic(flow_run):
    budget = flow_run.evaluate(lambda within_budget: {"within_budget": float(within_budget)},
                               mapping={"within_budget": "${run.outputs.within_budget}"}, name="budget")
    overlap = flow_run.evaluate(F1ScoreEvaluator(), mapping={"response": "${run.outputs.summary}",
                                                             "ground_truth": "${data.summary}"})
    assert budget.metrics["within_budget"] >= 0.8  # measured 0.905 to 0.952
    assert overlap.metrics["f1_score"] >= 0.4  # measured 0.518 to 0.538


def names_capital(output: str, capital: str) -> dict:
    return {"names_capital": float(capital.lower() in output.lower())}


@pytest.mark.promptflow(flow="flows/capital.prompty", data="evals/data/capitals.jsonl")
def test_capitals(flow_run):
    result = flow_run.evaluate(names_capital, mapping={"output": "${run.outputs.output}", "capital": "${data.capital}"})
    assert result.metrics["names_capital"] >= 0.7  # measured 0.833
