"""A long cell shows live progress on a terminal, and pytest's own output stays as without it.

The behavioural tests run pytest in a fresh process on a pseudo-terminal, keep the raw bytes it
wrote, and replay them on a small screen model (``\\r``, ``\\b``, line wrap) to see what is left.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest
from conftest import jsonl

from pytest_promptflow.reporting.progress import CellProgress, status_text

PROGRESS = re.compile(rb" \d+/60 rows, \d+\.\d rows/s(, 0 cache hits)?, \d+ errors?")
OFF = ("-o", "promptflow_progress=false")

TESTS = """\
import time

import pytest


def slow(text):
    time.sleep(0.05)
    if text.startswith("boom"):
        raise ValueError("boom row")
    return {"text": text}


def fast(text):
    return {"text": text}


@pytest.mark.promptflow(flow=slow, data="data/long.jsonl")
def test_long(flow_run):
    assert len(flow_run.rows) == 60


@pytest.mark.promptflow(flow=fast, data="data/short.jsonl")
def test_short(flow_run):
    assert len(flow_run.rows) == 4
"""


@pytest.fixture
def slow_project(tmp_path: Path) -> Path:
    """60 rows of 0.05 s at 2 at a time (a 1.5 s cell, 2 rows of which raise) and a 4-row instant cell."""
    (tmp_path / "data").mkdir()
    rows = [{"text": f"boom {i}" if i % 30 == 7 else f"row {i}"} for i in range(60)]
    (tmp_path / "data" / "long.jsonl").write_text(jsonl(rows))
    (tmp_path / "data" / "short.jsonl").write_text(jsonl(rows[:4]))
    (tmp_path / "test_cells.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\npromptflow_concurrency = 2\n")
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PROMPTFLOW", "PF_"))}
    env.pop("COLUMNS", None)
    env["TERM"] = "xterm"
    return env


def _pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def run_on_terminal(cwd: Path, *args: str, width: int = 80, timeout: float = 180) -> bytes:
    """Everything pytest wrote to a pseudo-terminal ``width`` columns wide, as raw bytes."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, width, 0, 0))
    process = subprocess.Popen(_pytest(*args), cwd=cwd, env=_env(), stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise TimeoutError(b"".join(chunks).decode(errors="replace"))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(master)
    return b"".join(chunks)


def with_and_without(cwd: Path, *args: str, width: int = 80) -> tuple[bytes, bytes]:
    """The same run with progress on and off, side by side."""
    with ThreadPoolExecutor(2) as pool:
        on = pool.submit(run_on_terminal, cwd, *args, width=width)
        off = pool.submit(run_on_terminal, cwd, *args, *OFF, width=width)
        return on.result(), off.result()


ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def screen(raw: bytes, width: int = 80) -> list[str]:
    """What a terminal ``width`` columns wide shows after ``raw``: colours dropped, long lines wrapped,
    ``\\r`` and ``\\b`` moving the cursor, later characters over earlier ones."""
    cells: dict[int, dict[int, str]] = {}
    row = col = 0
    for char in ESCAPES.sub("", raw.decode("utf-8", "replace")):
        if char == "\n":
            row += 1
        elif char == "\r":
            col = 0
        elif char == "\b":
            col = max(0, min(col, width - 1) - 1)
        else:
            if col >= width:
                row, col = row + 1, 0
            cells.setdefault(row, {})[col] = char
            col += 1
    return ["".join(cells.get(r, {}).get(c, " ") for c in range(width)).rstrip() for r in range(row + 1)]


def _steady(lines: list[str]) -> list[str]:
    """The screen without what differs between two runs: durations, and the comparison table at
    the end, whose figures (and so widths, and wrapping on a narrow screen) vary."""
    table = next((i for i, line in enumerate(lines) if line.startswith("promptflow: flow")), len(lines))
    steady = lines[:table] + [line for line in lines[table:] if " passed" in line]
    return [re.sub(r" in \d+\.\d+s", " in Ts", line) for line in steady]


@pytest.mark.parametrize(("verbosity", "result_line"), [
    ([], r"test_cells.py \.\. +\[100%\]$"),
    (["-v"], r"test_cells.py::test_long\[slow-long\] PASSED +\[ 50%\]$"),
    (["-q"], r"\.\. +\[100%\]$"),
], ids=["default", "verbose", "quiet"])
def test_terminal_shows_progress_and_then_exactly_pytests_own_output(
        slow_project: Path, verbosity: list[str], result_line: str) -> None:
    raw, without = with_and_without(slow_project, *verbosity)

    assert PROGRESS.search(raw), raw.decode(errors="replace")
    assert re.search(rb", [1-9]\d* errors?", raw), "rows that raise are counted"
    assert b"rows/s" not in without
    assert (b" [slow-long] " in raw) == (verbosity != ["-v"]), "a label only where -v does not show the cell"
    assert b"/4 rows" not in raw, "a short cell shows no progress"
    shown = screen(raw)
    assert _steady(shown) == _steady(screen(without)), "\n".join(shown)
    assert any("2 passed" in line for line in shown)
    assert any(re.match(result_line, line) for line in shown), "\n".join(shown)


@pytest.mark.parametrize(("width", "verbosity"), [(50, []), (30, ["-v"])])
def test_status_fits_a_narrow_terminal_and_never_wraps(slow_project: Path, width: int, verbosity: list[str]) -> None:
    """What is left of the line bounds the status (at 30 columns the -v line itself has wrapped)."""
    raw, without = with_and_without(slow_project, *verbosity, width=width)
    assert b" rows" in raw, raw.decode(errors="replace")
    assert _steady(screen(raw, width)) == _steady(screen(without, width))


def test_no_progress_when_output_is_not_a_terminal(slow_project: Path) -> None:
    done = subprocess.run(_pytest("--color=yes"), cwd=slow_project, env=_env(), capture_output=True, timeout=180)
    assert done.returncode == 0, done.stdout.decode(errors="replace")
    assert b"rows/s" not in done.stdout + done.stderr
    assert b"\b" not in done.stdout


@pytest.mark.parametrize("args", [["-n", "2"], ["-s"]], ids=["xdist-workers", "no-capture"])
def test_no_progress_where_others_share_the_line(slow_project: Path, args: list[str]) -> None:
    raw = run_on_terminal(slow_project, *args)
    assert any("2 passed" in line for line in screen(raw)), raw.decode(errors="replace")
    assert b"rows/s" not in raw


# --- the status text and its redraws, without a terminal ----------------------------------------


def test_status_text_counts_and_fits() -> None:
    full = " [clf-small] 12/28 rows, 3.0 rows/s, 5 cache hits, 1 error"
    assert status_text("clf-small", 12, 28, 4.0, 5, 1, 100) == full
    assert status_text("clf-small", 12, 28, 4.0, 5, 1, len(full)) == full
    assert status_text("clf-small", 12, 28, 4.0, 5, 1, len(full) - 1) == full.replace(" [clf-small]", "")
    assert status_text("", 1, 2, 0.0, 1, 2, 100) == " 1/2 rows, 0.0 rows/s, 1 cache hit, 2 errors"
    assert status_text("x", 12, 28, 4.0, 0, 1, 40) == " 12/28 rows, 3.0 rows/s, 1 error"
    assert status_text("x", 12, 28, 4.0, 0, 1, 30) == " 12/28 rows, 1 error"
    assert status_text("x", 12, 28, 4.0, 0, 1, 11) == " 12/28 rows"
    assert status_text("x", 12, 28, 4.0, 0, 1, 10) == ""


class FakeLine:
    def __init__(self) -> None:
        self.shown: list[str] = []
        self.width = 0

    def show(self, text: Callable[[int], str]) -> None:
        self.shown.append(text(70))
        self.width = len(self.shown[-1])


class FakeRow:
    def __init__(self, cache_hits: int = 0, failed: bool = False) -> None:
        self.cache_hits, self.failed = cache_hits, failed


def test_cell_progress_waits_a_second_then_redraws_twice_a_second_and_erases() -> None:
    now = [100.0]
    line = FakeLine()
    progress = CellProgress(line, "c", 4, clock=lambda: now[0])  # type: ignore[arg-type]
    progress.row_done(FakeRow(cache_hits=2))  # type: ignore[arg-type]
    for now[0] in (100.25, 100.5, 100.75):
        progress.tick()
    assert line.shown == [], "a cell shorter than a second shows nothing"
    progress.row_done(FakeRow(failed=True))  # type: ignore[arg-type]
    for now[0] in (101.0, 101.25, 101.5, 101.75):
        progress.tick()
    assert line.shown == [" [c] 2/4 rows, 2.0 rows/s, 2 cache hits, 1 error",
                          " [c] 2/4 rows, 1.3 rows/s, 2 cache hits, 1 error"]
    progress.close()
    assert line.shown[-1] == "" and line.width == 0


def test_a_cell_that_never_showed_anything_erases_nothing() -> None:
    line = FakeLine()
    progress = CellProgress(line, "c", 1)  # type: ignore[arg-type]
    progress.row_done(FakeRow())  # type: ignore[arg-type]
    progress.tick()
    progress.close()
    assert line.shown == []
