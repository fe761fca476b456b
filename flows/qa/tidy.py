"""Keep the first line of the model's answer, trimmed."""

from promptflow.core import tool


@tool
def tidy(answer: str) -> str:
    lines = [line.strip() for line in (answer or "").splitlines() if line.strip()]
    return lines[0] if lines else ""
