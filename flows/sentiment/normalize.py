"""Map the model's free-text answer onto one sentiment label."""

import re

from promptflow.core import tool

LABELS = ("positive", "negative", "neutral")


@tool
def normalize(answer: str) -> str:
    """The first label word the answer mentions, or "unknown" when it names none."""
    found = re.findall(r"\b(positive|negative|neutral)\b", (answer or "").lower())
    return found[0] if found else "unknown"
