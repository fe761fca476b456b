"""For a replay miss: the recorded request nearest to the one asked, and what differs between them.

The store is read once per session, on the first miss, and only the requests are kept. A request recorded
since ``recorded_by`` exists is matched by the flow and node that made it; an older one by its provider,
endpoint kind and model.
"""

from __future__ import annotations

import difflib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .store import CallRequest

PROMPT_FIELDS = ("messages", "prompt", "input")  # chat, completions, embeddings and responses
MAX_DIFF_LINES = 8
MAX_LINE_CHARS = 120
CONTEXT_CHARS = 40  # shown before the first changed character of a long line


@dataclass(frozen=True)
class Recorded:
    """A stored request, with the flow and node that recorded it (None for entries older than that field)."""

    path: Path
    request: Mapping[str, Any]
    flow: str | None
    node: str | None
    prompt: str  # its rendered prompt (``prompt_text``), made once when the store is read

    @property
    def family(self) -> tuple[Any, ...]:
        return tuple(self.request.get(key) for key in ("provider", "kind", "model"))


@dataclass(frozen=True)
class Nearest:
    """The nearest recorded request, what differs in a few words, and the prompt's diff lines."""

    recorded: Recorded
    differs: list[str]
    diff: list[str]

    def line(self, root: Path) -> str:
        by = f" (flow {self.recorded.flow}, node {self.recorded.node})" if self.recorded.flow else ""
        where = self.recorded.path.relative_to(root) if self.recorded.path.is_relative_to(root) else self.recorded.path
        what = ", ".join(self.differs) if self.differs else "nothing in the request (another repeat or store format)"
        return f"nearest recorded{by}: {where}, differs in {what}"


class StoreIndex:
    """The requests in a store, read on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: list[Recorded] | None = None
        self._lock = threading.Lock()

    def entries(self) -> list[Recorded]:
        with self._lock:
            if self._entries is None:
                self._entries = [entry for path in sorted(self.root.glob("??/*.json")) if (entry := _read(path))]
            return self._entries

    def nearest(self, asked: CallRequest, flow: str | None, node: str | None) -> Nearest | None:
        """The recorded request of the same flow and node (else of the same provider, kind and model) whose
        prompt is most like the one asked; None when the store holds none."""
        entries = self.entries()
        family = (asked.provider, asked.kind, asked.model)
        pool = [e for e in entries if flow is not None and (e.flow, e.node) == (flow, node)]
        pool = pool or [e for e in entries if e.family == family]
        if not pool:
            return None
        prompt = prompt_text(asked.body)
        request = asked.as_json()
        same = [e for e in pool if e.prompt == prompt]  # the usual miss: a parameter changed
        best = min(same or _most_alike(pool, prompt), key=lambda e: len(differences(e.request, request)[0]))
        return Nearest(best, *differences(best.request, request))


def _most_alike(pool: list[Recorded], prompt: str) -> list[Recorded]:
    """The entries whose prompt shares the most characters with ``prompt`` (``quick_ratio``), trying the entries in
    the order of the bound their length puts on it (``real_quick_ratio``), and stopping once no other can do as
    well."""
    def bound(entry: Recorded) -> float:
        total = len(entry.prompt) + len(prompt)
        return 2 * min(len(entry.prompt), len(prompt)) / total if total else 1.0

    matcher = difflib.SequenceMatcher(None, "", prompt, autojunk=False)  # the asked prompt's counts, once
    best: list[Recorded] = []
    best_ratio = -1.0
    for entry in sorted(pool, key=bound, reverse=True):
        if bound(entry) < best_ratio:
            break
        matcher.set_seq1(entry.prompt)
        ratio = matcher.quick_ratio()
        if ratio > best_ratio:
            best, best_ratio = [entry], ratio
        elif ratio == best_ratio:
            best.append(entry)
    return best


def _read(path: Path) -> Recorded | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        request = entry["request"]
        by = entry.get("recorded_by") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(request, dict) or not isinstance(by, dict):
        return None
    return Recorded(path, request, by.get("flow"), by.get("node"), prompt_text(request.get("body")))


def prompt_text(body: Any) -> str:
    """The rendered prompt of a request body, one line per message (``role: text``)."""
    if not isinstance(body, Mapping):
        return ""
    prompt = next((body[key] for key in PROMPT_FIELDS if key in body), "")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, Mapping) and "role" in m for m in prompt):
        return "\n".join(f"{m['role']}: {_content(m.get('content'))}" for m in prompt)
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def _content(content: Any) -> str:
    if isinstance(content, list):  # parts: keep their text
        return " ".join(str(part.get("text", "")) if isinstance(part, Mapping) else str(part) for part in content)
    return "" if content is None else str(content)


def differences(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(what differs: ``the prompt``, ``temperature 0 -> 0.7``, ...; the prompt's unified diff, a few lines)."""
    differs = [f"{key} {_show(recorded.get(key))} -> {_show(asked.get(key))}"
               for key in ("provider", "kind", "model", "api_version", "repeat") if recorded.get(key) != asked.get(key)]
    old, new = recorded.get("body") or {}, asked.get("body") or {}
    for key in sorted(set(old) | set(new)):
        if key not in PROMPT_FIELDS and old.get(key) != new.get(key):
            differs.append(f"{key} {_show(old.get(key))} -> {_show(new.get(key))}")
    before, after = prompt_text(old), prompt_text(new)
    if before == after:
        return differs, []
    return ["the prompt", *differs], prompt_diff(before, after)


def _show(value: Any) -> str:
    text = "unset" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def prompt_diff(recorded: str, asked: str) -> list[str]:
    """``- recorded line`` / ``+ asked line`` pairs (no context), long lines cut around their first change."""
    lines = [line for line in difflib.unified_diff(recorded.splitlines(), asked.splitlines(), n=0, lineterm="")
             if line[:1] in "-+" and not line.startswith(("---", "+++"))]
    removed = [line[1:] for line in lines if line.startswith("-")]
    added = [line[1:] for line in lines if line.startswith("+")]
    shown = [_around(line[0], line[1:], added if line.startswith("-") else removed) for line in lines]
    more = [f"  ... ({len(shown) - MAX_DIFF_LINES} more lines)"] if len(shown) > MAX_DIFF_LINES else []
    return [f"  {line}" for line in shown[:MAX_DIFF_LINES]] + more


def _around(sign: str, line: str, others: list[str]) -> str:
    """``line`` cut to ``MAX_LINE_CHARS``, starting a little before where it first differs from the most alike
    line on the other side."""
    if len(line) <= MAX_LINE_CHARS:
        return f"{sign} {line}"
    other = max(others, key=lambda o: _common_prefix(line, o), default="")
    start = max(0, _common_prefix(line, other) - CONTEXT_CHARS)
    cut = line[start:start + MAX_LINE_CHARS]
    return f"{sign} {'...' if start else ''}{cut}{'...' if start + MAX_LINE_CHARS < len(line) else ''}"


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
