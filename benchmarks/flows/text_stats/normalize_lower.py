"""variant_0: lower-case and collapse runs of whitespace."""

from promptflow.core import tool


@tool
def normalize_lower(text: str) -> str:
    return " ".join(text.lower().split())
