"""Lines at the end of the terminal output."""

from __future__ import annotations

from typing import Any

OUTCOMES = ("live", "from store", "failed", "missing from store")


def llm_summary(session: Any) -> list[str]:
    """How the session's LLM calls were answered, e.g. ``promptflow: 120 LLM calls: 0 live, 120 from store``."""
    tally = session.llm_tally()
    total = sum(tally.values())
    if not total:
        return []
    parts = ", ".join(f"{tally[outcome]} {outcome}" for outcome in OUTCOMES if tally[outcome] or outcome == "live")
    return [f"promptflow: {total} LLM calls ({session.llm.mode} mode, store {session.llm.store}): {parts}"]
