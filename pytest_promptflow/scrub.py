"""What every file the plugin writes passes through: known secrets become ``***`` and any string
becomes writable text, and the file is replaced whole.

Known secrets are the credentials of the connections this process resolved or sent with an LLM
call, the values of environment variables named like a secret (``AOAI_API_KEY``, ``HF_TOKEN``,
``AZURE_CLIENT_SECRET``, ``DB_PASSWORD``), and the secret fields of the project's ``.env``. A value
shorter than MIN_SECRET_CHARS is never one: replacing it would garble ordinary text (``test``,
``1234``). A lone surrogate (a dataset's ``"\\ud800"``) cannot be encoded as UTF-8 and would
stop a writer mid-file; it is written as its escape, ``\\ud800``, in every file alike.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TextIO

REDACTED = "***"
MIN_SECRET_CHARS = 8
#: an environment variable or field holding a secret: a part of its name ends in KEY, TOKEN, SECRET, PASSWORD,
#: PASSWD, CREDENTIAL or CONNECTION_STRING (``AOAI_API_KEY``, ``SYSTEM_ACCESSTOKEN``; not ``KEYBOARD_LAYOUT``)
SECRET_NAME = re.compile(r"(?:keys?|tokens?|secrets?|passwords?|passwd|credentials?|connection_?strings?)(?:$|[_.-])",
                         re.IGNORECASE)
#: stand-ins that are no secrets, though a connection carries them as its key
NOT_SECRETS = frozenset({"embedded-model"})

_lock = threading.Lock()
_remembered: set[str] = set()
_dotenv_files: set[Path] = set()


def remember_secrets(*values: Any) -> None:
    """Values this process must never write (a resolved connection's key, a credential sent)."""
    found = {value.strip() for value in values if isinstance(value, str)}
    with _lock:
        _remembered.update(value for value in found if _is_secret(value))


def remember_dotenv(path: Path) -> None:
    """The project's ``.env``, whose secret fields are read afresh whenever secrets are asked for."""
    with _lock:
        _dotenv_files.add(Path(path))


def known_secrets() -> tuple[str, ...]:
    """Every known secret, longest first (so a secret holding another is replaced whole)."""
    with _lock:
        found = set(_remembered)
        files = list(_dotenv_files)
    found.update(value for name, value in os.environ.items() if SECRET_NAME.search(name))
    for path in files:
        found.update(dotenv_secrets(path))
    return tuple(sorted((value for value in found if _is_secret(value)), key=lambda value: (-len(value), value)))


def _is_secret(value: str) -> bool:
    return len(value) >= MIN_SECRET_CHARS and value not in NOT_SECRETS


def dotenv_secrets(path: Path) -> set[str]:
    """Secret values of a ``.env``: ``NAME=value`` lines named like a secret, and the secret fields of
    connection lines ``name={...}`` (also under ``"secrets"``). An unreadable file or line is skipped:
    the connection resolver reports those."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return set()
    found: set[str] = set()
    for line in lines:
        name, sep, value = line.strip().removeprefix("export ").partition("=")
        value = value.strip()
        if not sep or name.startswith("#"):
            continue
        if value.startswith("{"):
            try:
                found.update(_secret_fields(json.loads(value)))
            except ValueError:
                continue
        elif SECRET_NAME.search(name.strip()):
            found.add(value.strip("\"'"))
    return found


def _secret_fields(values: Any, nested: bool = False) -> Iterable[str]:
    if not isinstance(values, Mapping):
        return
    for name, value in values.items():
        if isinstance(value, Mapping):
            yield from _secret_fields(value, nested=nested or name == "secrets")
        elif isinstance(value, str) and (nested or SECRET_NAME.search(str(name))):
            yield value


def scrub_text(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """``text`` with every known secret as ``***`` and lone surrogates as their ``\\udXXX`` escapes."""
    for secret in known_secrets() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def scrub(data: Any, secrets: tuple[str, ...] | None = None) -> Any:
    """A JSON-able value with every string in it (keys too) scrubbed; other values as they are. A dict or list
    with nothing to scrub is returned itself, not copied: a report of 100,000 rows is not held twice."""
    secrets = known_secrets() if secrets is None else secrets
    if isinstance(data, str):
        return scrub_text(data, secrets)
    if isinstance(data, Mapping):
        pairs = [(scrub(key, secrets) if isinstance(key, str) else key, scrub(value, secrets))
                 for key, value in data.items()]
        if type(data) is dict and all(new[0] is old[0] and new[1] is old[1]
                                      for new, old in zip(pairs, data.items(), strict=True)):
            return data
        return dict(pairs)
    if isinstance(data, (list, tuple)):
        values = [scrub(value, secrets) for value in data]
        if type(data) is list and all(new is old for new, old in zip(values, data, strict=True)):
            return data
        return values
    return data


def write_text(path: Path, text: str) -> Path:
    """``text`` scrubbed into ``path``, whole: a temporary file beside it is renamed into place, so a
    reader (or a crash) never meets half a file and an old file stays until the new one is complete."""
    return _write_whole(path, lambda file: file.write(scrub_text(text)))


def write_pieces(path: Path, pieces: Iterable[str]) -> Path:
    """``pieces`` (whole lines, or runs of them) scrubbed one by one into ``path``, written whole: a big file
    (a CSV of 100,000 rows) is never one string in memory."""
    secrets = known_secrets()
    return _write_whole(path, lambda file: file.writelines(scrub_text(piece, secrets) for piece in pieces))


def write_json(path: Path, data: Any, **dumps: Any) -> Path:
    """``data`` scrubbed, as JSON (``dumps`` are json.dumps's options), written whole into ``path``. Without
    ``default`` only scrubbed strings reach the text, so it is written in pieces: a report of 100,000 rows
    is never one string in memory."""
    if "default" in dumps:  # str(an object) may hold a secret that only the whole text shows
        return write_text(path, json.dumps(scrub(data), **dumps) + "\n")
    return _write_whole(path, lambda file: _dump(scrub(data), file, json.JSONEncoder(**dumps)))


def _dump(data: Any, file: TextIO, encoder: json.JSONEncoder, chunks: int = 4096) -> None:
    """``data`` encoded into ``file``, ``chunks`` of the encoder's pieces per write (one write per piece is slow)."""
    pieces: list[str] = []
    for piece in encoder.iterencode(data):
        pieces.append(piece)
        if len(pieces) >= chunks:
            file.write("".join(pieces))
            pieces.clear()
    file.write("".join(pieces) + "\n")


def _write_whole(path: Path, write: Callable[[TextIO], Any]) -> Path:
    """``write`` into a temporary file beside ``path`` that is then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # the umask's mode
    try:
        with temporary.open("x", encoding="utf-8", newline="") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


class ScrubbedStream:
    """A text stream whose every write is scrubbed: a process's own log (a deployment's), where
    promptflow, a flow's ``print`` and a traceback all write."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub_text(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def scrub_standard_streams() -> None:
    """This process's stdout and stderr scrubbed from now on (call it before any logger takes them)."""
    sys.stdout = ScrubbedStream(sys.stdout)  # type: ignore[assignment]
    sys.stderr = ScrubbedStream(sys.stderr)  # type: ignore[assignment]
