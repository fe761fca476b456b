"""Per-row scores of predicted entities against the ground-truth list."""

import json
from typing import List, Union

from promptflow.core import tool


def _as_set(value: Union[List[str], str, None]) -> set:
    if value is None:
        return set()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value] if value.strip() else []
    return {str(item).strip().lower() for item in value if str(item).strip()}


@tool
def match(entities: list, ground_truth: list) -> dict:
    predicted, truth = _as_set(entities), _as_set(ground_truth)
    hits = len(predicted & truth)
    recall = hits / len(truth) if truth else float(not predicted)
    precision = hits / len(predicted) if predicted else 1.0
    return {"exact_match": int(predicted == truth), "recall": recall, "precision": precision}
