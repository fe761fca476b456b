from promptflow.core import tool


@tool
def score(answer: str, truth: str) -> int:
    """1 when the model said anything at all (the embedded model is too weak to be right)."""
    return int(bool(answer.strip()))
