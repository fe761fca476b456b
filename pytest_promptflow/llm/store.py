"""The LLM answer store: one JSON file per answer, keyed by the request's content.

The key covers the provider (the embedded model, or an endpoint's scheme and host), the endpoint
kind, the model or deployment, the API version, the whole request body (messages or prompt and
every generation parameter) and, from a row's second repeat on, the repeat's index; never a header,
a credential or any other part of the URL. Each file is written to a temporary name and renamed
into place, so threads, xdist workers and concurrent pytest processes never leave a torn file, and
an interrupted run at worst leaves a stray ``*.tmp``. Files are deterministic (sorted keys,
indented) so a store can be committed and diffed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

FORMAT = 1


@dataclass(frozen=True)
class CallRequest:
    """The content of an LLM request, which is all its key depends on."""

    provider: str
    kind: str  # "chat/completions", "completions", "embeddings", "responses"
    model: str
    api_version: str | None
    body: Mapping[str, Any]
    #: the repeat of a row that made the call (``--promptflow-repeat``): 0, the first, is left out of the key,
    #: so stores recorded before repeats existed still answer it; each later repeat has answers of its own
    repeat: int = 0

    def as_json(self) -> dict[str, Any]:
        fields = {"provider": self.provider, "kind": self.kind, "model": self.model,
                  "api_version": self.api_version, "body": self.body}
        return {**fields, "repeat": self.repeat} if self.repeat else fields

    @property
    def key(self) -> str:
        canonical = json.dumps({"format": FORMAT, **self.as_json()}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """A successful response: its status, content type and body (JSON, or text for streams)."""

    status: int
    content_type: str
    body: Any

    def content(self) -> bytes:
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, ensure_ascii=False).encode()


class Store:
    """Answers under ``root/<first two hex digits of the key>/<key>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, request: CallRequest) -> Path:
        key = request.key
        return self.root / key[:2] / f"{key}.json"

    def get(self, request: CallRequest, written_since: float | None = None) -> Answer | None:
        """The stored answer, or None when there is none (or the file is not one of ours, or was written
        before the ``written_since`` timestamp)."""
        path = self.path(request)
        try:
            if written_since is not None and path.stat().st_mtime < written_since:
                return None
            entry = json.loads(path.read_text(encoding="utf-8"))
            response = entry["response"]
            return Answer(int(response["status"]), str(response["content_type"]), response["body"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, request: CallRequest, answer: Answer, forbidden: tuple[str, ...] = (),
            recorded_by: Mapping[str, str | None] | None = None) -> bool:
        """Stores the answer, unless its text would contain one of the ``forbidden`` secrets. ``recorded_by``
        (the flow and node that asked; not part of the key) lets a replay miss name the nearest recorded request."""
        path = self.path(request)
        entry = {"format": FORMAT, "request": request.as_json(),
                 "response": {"status": answer.status, "content_type": answer.content_type, "body": answer.body},
                 **({"recorded_by": dict(recorded_by)} if recorded_by and recorded_by.get("flow") else {})}
        text = json.dumps(entry, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
        if any(secret in text for secret in forbidden):
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:8]}-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return True
