"""Aggregate the per-row scores into the "accuracy" metric."""

from typing import List

from promptflow.core import log_metric, tool


@tool
def aggregate(scores: List[int]) -> dict:
    accuracy = round(sum(scores) / len(scores), 4) if scores else 0.0
    log_metric("accuracy", accuracy)
    return {"accuracy": accuracy, "count": len(scores)}
