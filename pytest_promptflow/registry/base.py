"""What every registry does for a release, whatever stores it.

Registration is conditional on content: a dataset or a flow gets a new version only when its
content hash differs from the latest registered version's (the GenAIOps template's ``data_hash``
and ``model_hash`` tags); otherwise the latest version is reused and named as such.

With the flow version, a release keeps each dataset's per-row rows (the chosen cell's lines of
``rows.csv``, one file ``<dataset>.csv`` each), so a later run can pair its rows with the released
version's (``baseline: released``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol


@dataclass(frozen=True)
class Version:
    """A registered dataset or flow version, and whether this release created it."""

    name: str
    version: str
    content_hash: str
    created: bool

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "content_hash": self.content_hash,
                "created": self.created}


class Registry(Protocol):
    """A place for datasets, flows (as models) and release records."""

    def lock(self) -> AbstractContextManager[None]:
        """Held around a whole release, so two releases at once never both create a version."""

    def register_dataset(self, name: str, path: Path, content_hash: str) -> Version:
        """A new version of dataset ``name`` holding ``path``, unless its latest has ``content_hash``."""

    def register_flow(self, name: str, folder: Path, content_hash: str, tags: Mapping[str, str]) -> Version:
        """A new model version of the packaged flow ``folder``, unless its latest has ``content_hash``."""

    def register_rows(self, flow: str, version: str, rows: Mapping[str, Path]) -> None:
        """Keeps each dataset's rows file (``rows[dataset]``, named ``<dataset>.csv``) with ``flow`` ``version``;
        the latest kept for a version is the one ``released_rows`` gives back."""

    def released_rows(self, flow: str, dataset: str) -> Path | None:
        """The rows file of ``dataset`` kept with ``flow``'s latest registered version, downloaded into a new
        temporary folder (the caller's to delete); None when there is no such version or file."""

    def record_release(self, record: Mapping[str, Any]) -> None:
        """Keeps the release record (JSON-able) with the registry."""
