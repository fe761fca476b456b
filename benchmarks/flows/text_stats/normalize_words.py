"""variant_1: case-fold and keep only word characters (punctuation dropped)."""

import re

from promptflow.core import tool


@tool
def normalize_words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))
