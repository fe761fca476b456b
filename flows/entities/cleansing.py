"""Turn the model's answer ("A, B and C" or "None") into a list of entity strings."""

import re
from typing import List

from promptflow.core import tool


@tool
def cleansing(entities_str: str) -> List[str]:
    """Split on commas, newlines and " and "; drop bullets, quotes, "None" and repeats."""
    parts = re.split(r",|\n|\band\b", entities_str or "")
    entities: List[str] = []
    seen = set()
    for part in parts:
        item = part.strip(" \t.\"'-*").strip()
        if not item or item.lower() in ("none", "n/a") or item.lower() in seen:
            continue
        seen.add(item.lower())
        entities.append(item)
    return entities
