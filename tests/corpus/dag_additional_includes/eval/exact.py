from promptflow.core import tool
from shared.textutil import words as split


@tool
def exact(words: int, text: str) -> int:
    return int(words == len(split(text)))
