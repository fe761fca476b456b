from typing import List

from promptflow.core import log_metric, tool


@tool
def rate(answered: List[int]) -> float:
    value = sum(answered) / len(answered)
    log_metric("answer_rate", value)
    return value
