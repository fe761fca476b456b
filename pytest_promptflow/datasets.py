"""Dataset rows from JSONL and CSV files, parsed once per file version and shared by every cell."""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .errors import SpecError, Where

if TYPE_CHECKING:
    from .config import DatasetSpec

SUPPORTED_SUFFIXES = (".jsonl", ".csv")
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}

# path -> (mtime_ns, size, rows): one entry per file, replaced when the file changes
_cache: dict[Path, tuple[int, int, tuple[dict[str, Any], ...]]] = {}
_lock = threading.Lock()


def load_rows(spec: DatasetSpec) -> list[dict[str, Any]]:
    """The rows of ``spec.source`` (fresh dicts: callers may change them without touching the cache)."""
    source = Path(os.path.abspath(spec.source))
    try:
        stat = source.stat()
    except OSError:
        raise SpecError(spec.where or Where(source), f"dataset {spec.name!r}: file not found: {source}",
                        "check its source path or create the file") from None
    suffix = source.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SpecError(Where(source), f"dataset {spec.name!r}: unsupported data file {source.name}",
                        f"use one of: {', '.join(SUPPORTED_SUFFIXES)}")
    with _lock:
        cached = _cache.get(source)
    if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
        rows = cached[2]
    else:
        rows = tuple(_read_jsonl(source) if suffix == ".jsonl" else _read_csv(source))
        with _lock:
            _cache[source] = (stat.st_mtime_ns, stat.st_size, rows)
    if not rows:
        raise SpecError(Where(source), f"dataset {spec.name!r} has no rows",
                        "add rows (one JSON object per line, or CSV lines under a header)")
    return [dict(row) for row in rows]


def check_columns(spec: DatasetSpec, rows: Sequence[Mapping[str, Any]], needed: Iterable[str],
                  where: Where | None = None) -> None:
    """Raise a SpecError at ``where`` (else the dataset's YAML line, else its file) for needed columns it lacks."""
    available = list(dict.fromkeys(key for row in rows for key in row))
    missing = [column for column in dict.fromkeys(needed) if column not in available]
    if not missing:
        return
    hints = "".join(
        f"did you mean {close[0]!r} for {column!r}? " if len(missing) > 1 else f"did you mean {close[0]!r}? "
        for column in missing
        if (close := difflib.get_close_matches(column, available, n=1))
    )
    noun = "column" if len(missing) == 1 else "columns"
    raise SpecError(
        where or spec.where or Where(spec.source),
        f"dataset {spec.name!r} ({Path(spec.source).name}) has no {noun} {', '.join(map(repr, missing))}",
        f"{hints}available columns: {', '.join(available) or 'none'}; fix the mapping or the data",
    )


def _read_text(source: Path) -> str:
    try:
        return source.read_bytes().decode("utf-8-sig")  # newlines untranslated, as csv wants
    except UnicodeDecodeError as exc:
        raise SpecError(Where(source), f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                        "save the file as UTF-8") from None


def _read_jsonl(source: Path) -> list[dict[str, Any]]:
    rows = []
    # split on "\n" only: str.splitlines would also break at U+2028 inside JSON strings
    for number, line in enumerate(_read_text(source).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError(Where(source, number), f"malformed JSON: {exc.msg} (column {exc.colno})",
                            f"fix or remove line {number}") from None
        if not isinstance(row, dict):
            kind = _JSON_KINDS.get(type(row), "null")
            raise SpecError(Where(source, number), f"line is JSON but {kind}, not an object",
                            f'make line {number} one JSON object, e.g. {{"question": "...", "answer": "..."}}')
        rows.append(row)
    return rows


def _read_csv(source: Path) -> list[dict[str, Any]]:
    rows = []
    reader = csv.DictReader(io.StringIO(_read_text(source), newline=""))
    try:
        header = reader.fieldnames or []
        duplicates = sorted({name for name in header if header.count(name) > 1})
        if duplicates:
            raise SpecError(Where(source, 1), f"the header repeats column {', '.join(map(repr, duplicates))}",
                            "give every column its own name")
        for row in reader:
            if None in row or None in row.values():
                problem = "more" if None in row else "fewer"
                raise SpecError(Where(source, reader.line_num), f"row has {problem} fields than the header "
                                f"({len(header)})", f"fix line {reader.line_num}: quote values that hold commas")
            rows.append(row)
    except csv.Error as exc:
        raise SpecError(Where(source, reader.line_num), f"malformed CSV: {exc}",
                        f"fix line {reader.line_num}") from None
    return rows
