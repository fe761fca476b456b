"""Word statistics of a text: counts and the top_k most frequent (case-folded) words."""

import re
from collections import Counter

from promptflow.core import tool


@tool
def stats(text: str, top_k: int = 3) -> dict:
    words = re.findall(r"\w+", text.casefold())
    counts = Counter(words)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top_k]
    return {"word_count": len(words), "unique_words": len(counts), "top_words": [w for w, _ in top]}
