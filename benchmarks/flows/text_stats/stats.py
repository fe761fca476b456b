"""Word statistics of the normalised text: counts and the top_k most frequent words."""

from collections import Counter

from promptflow.core import tool


@tool
def stats(text: str, top_k: int = 3) -> dict:
    words = text.split()
    counts = Counter(words)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return {"word_count": len(words), "unique_words": len(counts), "top_words": [w for w, _ in top]}
