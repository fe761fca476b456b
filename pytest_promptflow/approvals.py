"""Human approval of a release: pending, approved and rejected releases as JSON files in a folder.

A release the gate wants to carry out is written as ``<folder>/<release-id>.json`` holding its
payload (flow, configuration, metrics, verdicts, datasets...) and the payload's digest. A person
approves or rejects it with ``pytest-promptflow approve|reject``, which records who, when and the
digest they saw. A later gate run asks :func:`status` with the digest of what it would release now:
an approval counts only for exactly that digest, so a changed metric needs a new approval.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

from pytest_promptflow.errors import SpecError
from pytest_promptflow.scrub import write_json

Status = Literal["pending", "approved", "rejected"]
#: ``promptflow_release_dir``'s default, relative to pytest's rootdir.
DEFAULT_DIR = "releases"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def digest(payload: Mapping[str, Any]) -> str:
    """The sha256 of ``payload`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def release_id(flow: str, payload_digest: str) -> str:
    """``<flow>-<digest[:12]>``; in the flow name, anything but letters, digits, ``._-`` becomes ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", flow).lstrip("._-") or "flow"
    return f"{name}-{payload_digest[:12]}"


def release_dir(rootdir: Path, ini_value: str | None = None) -> Path:
    """The folder of ``promptflow_release_dir`` (relative to ``rootdir``), by default ``<rootdir>/releases``."""
    return rootdir / (ini_value or DEFAULT_DIR)


def approve_command(release: str, folder: Path) -> str:
    """The command a person runs to approve ``release``, for the gate to print."""
    return f"pytest-promptflow approve {release} --dir {folder}"


def write_pending(folder: Path, release: str, payload: Mapping[str, Any]) -> Path:
    """Writes release ``release`` as pending, unless that file already holds this payload (kept as it is)."""
    path = _path(folder, release)
    payload_digest = digest(payload)
    with _locked(folder):
        if path.exists():
            existing = _read(path)
            if existing["digest"] == payload_digest:
                return path
            raise SpecError(path, "holds another payload under the same release id",
                            "remove the file or write the release under another id")
        _write(path, {"release": release, "flow": str(payload.get("flow", "")), "digest": payload_digest,
                      "status": "pending", "created": _now(), "payload": dict(payload), "decisions": []})
    return path


def approve(folder: Path, release: str, by: str, note: str = "") -> Path:
    """Records that ``by`` approved ``release`` as written (its digest re-verified); returns the file."""
    return _decide(folder, release, {"status": "approved", "by": by, "note": note})


def reject(folder: Path, release: str, by: str, reason: str) -> Path:
    """Records that ``by`` rejected ``release`` and why; returns the file."""
    return _decide(folder, release, {"status": "rejected", "by": by, "reason": reason})


def status(folder: Path, flow: str, payload_digest: str) -> Status | None:
    """What was decided about releasing ``flow`` with exactly ``payload_digest``; ``None`` if never written.

    An approval or rejection counts only when the digest it recorded is ``payload_digest``.
    """
    found = decision(folder, flow, payload_digest)
    return found["status"] if found else None


def decision(folder: Path, flow: str, payload_digest: str) -> dict[str, Any] | None:
    """Like :func:`status`, with the details for a release record.

    ``{"status", "release", "file", "digest"}``, and for a decision also ``by``, ``at`` and ``note``
    or ``reason``; ``None`` if no release of ``flow`` with ``payload_digest`` was written.
    """
    for path, record in releases(folder):
        if record["flow"] == flow and record["digest"] == payload_digest:
            _verify(path, record)
            decided = [d for d in record["decisions"] if d.get("digest") == payload_digest]
            last = decided[-1] if decided else {"status": "pending", "digest": payload_digest}
            return {**last, "release": record.get("release", path.stem), "file": str(path)}
    return None


def releases(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every release file in ``folder`` (oldest first) with its contents."""
    if not folder.is_dir():
        return []
    found = [(path, _read(path)) for path in sorted(folder.glob("*.json"))]
    return sorted(found, key=lambda item: str(item[1].get("created", "")))


def _decide(folder: Path, release: str, decision: dict[str, Any]) -> Path:
    path = _path(folder, release)
    with _locked(folder):
        if not path.exists():
            raise SpecError(folder, f"no release {release!r}", "list the releases with: pytest-promptflow releases")
        record = _read(path)
        _verify(path, record)
        decision.update(digest=record["digest"], at=_now())
        record["decisions"].append(decision)
        record["status"] = decision["status"]
        _write(path, record)
    return path


def _verify(path: Path, record: Mapping[str, Any]) -> None:
    """Refuses a file whose payload no longer hashes to the digest it was written with."""
    if digest(record["payload"]) != record["digest"]:
        raise SpecError(path, "the payload was changed after the release was written (its digest does not match)",
                        "delete the file and run the release again to write it anew")


def _path(folder: Path, release: str) -> Path:
    if not _SAFE_ID.fullmatch(release):
        raise SpecError(None, f"{release!r} is not a release id",
                        "use letters, digits, '.', '_' and '-' (as `pytest-promptflow releases` lists them)")
    return folder / f"{release}.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SpecError(path, f"cannot be read as a release ({error})", "delete it or restore it") from None
    if not isinstance(record, dict) or not {"flow", "digest", "payload", "decisions"} <= record.keys():
        raise SpecError(path, "is not a release file", "delete it or move it out of the releases folder")
    return record


def _write(path: Path, record: Mapping[str, Any]) -> None:
    """Atomically and scrubbed (``scrub.write_json``)."""
    write_json(path, record, indent=2, sort_keys=True, ensure_ascii=False)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialises read-modify-write of release files, so two approvals at once both land."""
    from filelock import FileLock

    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / ".lock")):
        yield


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
