from promptflow.core import tool
from textutil import words


@tool
def count(text: str) -> int:
    return len(words(text))
