from promptflow.core import tool

ANSWERS = {"France": "Paris", "sky": "Blue", "spider": "Eight", "water": "Ice", "moo": "A cow"}


@tool
def lookup(question: str) -> str:
    return next((answer for word, answer in ANSWERS.items() if word in question), "I do not know")
