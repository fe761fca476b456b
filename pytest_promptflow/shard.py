"""Shards (``--promptflow-shard I/N``): CI's parallel jobs each run a deterministic 1/N of the cells.

Cells go round-robin over their sorted ids (``flow``, ``cell``): shards differ by one cell at most, and
every job of one pipeline run collects the same suite, so they agree. Adding a cell may move others to
another shard; nothing keys on a cell's shard (the LLM store keys on the call), so that costs nothing.
Every item of a cell goes to the cell's shard, so the cell still runs once. An item that is no cell (a
plain test, a marker that could not be planned) shards the same way by its node id.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

SHAPE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class Shard(NamedTuple):
    number: int  # 1-based
    total: int

    def __str__(self) -> str:
        return f"{self.number}/{self.total}"


def parse_shard(text: str) -> Shard:
    """``I/N`` with 1 <= I <= N, or a ValueError that says how to write it."""
    found = SHAPE.match(text)
    index, count = (int(found[1]), int(found[2])) if found else (0, 0)
    if not found or count < 1 or not 1 <= index <= count:
        raise ValueError(f"--promptflow-shard {text!r} is no shard; write I/N with 1 <= I <= N, e.g. 1/2")
    return Shard(index, count)


def unit_of(item: Any) -> tuple[str, ...]:
    """What shards together: the item's cell (flow, cell id), else its node id."""
    from .reporting.header import planned_cell

    planned = planned_cell(item)
    return ("cell", planned.cell.flow, planned.cell.id) if planned is not None else ("item", item.nodeid)


def split_items(items: Sequence[Any], shard: Shard) -> tuple[list[Any], list[Any]]:
    """(this shard's items, the others'), each in collection order."""
    units = sorted({unit_of(item) for item in items})
    mine = {unit for position, unit in enumerate(units) if position % shard.total == shard.number - 1}
    kept = [item for item in items if unit_of(item) in mine]
    return kept, [item for item in items if unit_of(item) not in mine]


def shard_line(shard: Shard, kept: Sequence[Any], every: Sequence[Any]) -> str:
    """The collection header's line: which shard, and how many of the cells it runs."""
    cells = {unit for unit in map(unit_of, every) if unit[0] == "cell"}
    mine = {unit for unit in map(unit_of, kept) if unit[0] == "cell"}
    return f"promptflow: shard {shard}: {len(mine)} of {len(cells)} cells (round-robin over sorted cell ids)"
