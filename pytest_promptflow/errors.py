"""The one error users see for bad input: ``file:line: what is wrong; what to do``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

KEYWORD = re.compile(r"[\w.\-\[\]:/+]+")  # what ``pytest -k`` takes as one name without quoting


@dataclass(frozen=True)
class Where:
    """A place in a user's file (or a test item) that an error points at."""

    path: Path | str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


class SpecError(Exception):
    """Bad user input, shown as one line naming the place and the fix, never a traceback."""

    def __init__(self, where: Where | Path | str | None, problem: str, fix: str = "") -> None:
        self.where = where if where is None or isinstance(where, Where) else Where(where)
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.problem}" if self.where else self.problem
        return f"{text}; {self.fix}" if self.fix else text


def unforeseen(exc: Exception, where: Where | Path | str | None, what: str) -> SpecError:
    """An input no check foresaw, still one line on the items it concerns (never a stopped session);
    the exception stays its cause: -vv or --tb=long shows its traceback."""
    error = SpecError(where, f"{what}: {type(exc).__name__}: {exc}",
                      "fix what it names (-vv shows the traceback; if the input looks right, report it)")
    error.__cause__ = exc
    return error


def replay_error(misses: list[str], select: str | None = None) -> SpecError:
    """The line for LLM requests that replay mode found no stored answer for (the first one's nearest recorded
    request and prompt diff on the lines after it), and the cheapest fix: cache mode, which calls the model for
    the misses only, over the items that missed (``-k select``)."""
    first, *diff = misses[0].split("\n")
    more = f" (and {len(misses) - 1} more)" if len(misses) > 1 else ""
    rerun = f"-k {select} " if select and KEYWORD.fullmatch(select) else ""
    fix = (f"rerun {'them' if rerun else 'it'} with {rerun}--promptflow-llm=cache (calls the model for the misses "
           "only), or record every answer with --promptflow-llm=record")
    return SpecError(None, f"replay: {first}{more}", "\n".join([fix, *diff]))
