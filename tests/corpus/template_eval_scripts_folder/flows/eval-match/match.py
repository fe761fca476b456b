from promptflow.core import tool


@tool
def match(answer: str, truth: str) -> int:
    return int(answer.strip().lower() == truth.strip().lower())
