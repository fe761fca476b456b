"""Per-row score: did the flow predict the labelled sentiment?"""

from promptflow.core import tool


@tool
def line_score(groundtruth: str, prediction: str) -> int:
    return int(str(groundtruth).strip().lower() == str(prediction).strip().lower())
