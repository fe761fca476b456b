"""Under pytest-xdist, every item of a cell goes to one worker, so the cell runs once however many tests use it.

The controller collects nothing and sees only node ids, from which a cell cannot be told (two tests of one
cell have unrelated ids). So each worker writes what it collected into the session's shared folder before it
reports its collection: each item's cell, the collection header's lines and what the shard deselected. The
controller reads the first node's file, prints the header, counts the deselected items, and schedules by cell:
xdist's ``loadscope`` scheduler with a cell as the scope (an item of no cell is a scope of its own, as under
``load``). Imported only when xdist runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from xdist.scheduler import LoadScopeScheduling

from .shard import unit_of

COLLECTION_FILE = "collection-{worker}.json"


class CellScheduling(LoadScopeScheduling):
    """``--dist load`` (what ``-n`` means without ``--dist``) with a cell's items kept on one worker."""

    def __init__(self, config: Any, log: Any, cells: dict[str, str]) -> None:
        super().__init__(config, log)
        self.cells = cells  # node id -> its cell, filled as the workers report their collections

    def _split_scope(self, nodeid: str) -> str:
        return self.cells.get(nodeid, nodeid)


def write_collection(shared_dir: Path, worker: str, items: Sequence[Any], header: list[str],
                     deselected: int) -> None:
    """A worker's collection as the controller needs it: node id -> cell, the header, the shard's deselected."""
    cells = {item.nodeid: "\0".join(unit) for item in items if (unit := unit_of(item))[0] == "cell"}
    record = {"cells": cells, "header": header, "deselected": deselected}
    shared_dir.mkdir(parents=True, exist_ok=True)
    path = shared_dir / COLLECTION_FILE.format(worker=worker)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)


def read_collection(shared_dir: Path, worker: str) -> dict[str, Any]:
    """What ``write_collection`` wrote for ``worker``; empty when it wrote nothing (no promptflow item)."""
    try:
        record = json.loads((shared_dir / COLLECTION_FILE.format(worker=worker)).read_text())
    except (OSError, ValueError):
        return {"cells": {}, "header": [], "deselected": 0}
    return dict(record)
