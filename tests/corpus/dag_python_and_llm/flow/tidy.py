from promptflow.core import tool


@tool
def tidy(answer: str) -> str:
    return answer.strip().strip(".").lower()
