def words(text: str) -> list:
    """The text's words, lower case, without punctuation."""
    return [word.strip(".,!?").lower() for word in text.split() if word.strip(".,!?")]
