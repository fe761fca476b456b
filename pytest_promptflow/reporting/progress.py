"""Live progress of a long cell on the terminal: rows done, rows/s, cache hits, errors.

The status is written after whatever is on pytest's current line (the ``-v`` line, the dots) and
erased when the cell is done, beside pytest's terminal writer rather than through it, so pytest's
output, and its idea of where the line ends, stay exactly as without it. Shown only on a terminal,
only for a cell that takes longer than ``DELAY``, and never where something else shares the line:
xdist workers, ``-s`` and tee-sys capture, live logging. ``promptflow_progress = false`` turns it off.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable

import pytest

if TYPE_CHECKING:
    from ..engine import ObserverFactory, Row
    from ..matrix import Cell

DELAY = 1.0  # seconds a cell runs before its status appears: short cells print nothing
INTERVAL = 0.5  # seconds between two redraws


def progress_factory(config: pytest.Config) -> ObserverFactory | None:
    """The engine's observer factory for this session, or None when progress is not to be shown."""
    if not config.getini("promptflow_progress") or hasattr(config, "workerinput"):
        return None
    if config.getoption("capture", "fd") in ("no", "tee-sys"):  # the flow's own prints reach the line
        return None
    if config.getoption("log_cli_level", None) is not None or config.getini("log_cli"):
        return None
    with_label = config.get_verbosity() <= 0  # -v already shows the cell's id on the line

    def start(cell: Cell, total: int) -> CellProgress | None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None or not reporter.isatty():
            return None
        label = cell.id.encode("ascii", "backslashreplace").decode() if with_label else ""
        return CellProgress(StatusLine(config.get_terminal_writer(), capture), label, total)

    return start


def status_text(label: str, done: int, total: int, seconds: float, cache_hits: int, errors: int,
                room: int) -> str:
    """`` [label] 12/28 rows, 3.1 rows/s, 5 cache hits, 1 error`` in at most ``room`` columns: where it
    does not fit, the label goes first, then cache hits, then the rate; nothing if even the rows do not fit."""
    rows, rate = f"{done}/{total} rows", f"{done / seconds if seconds > 0 else 0.0:.1f} rows/s"
    hits, failed = f"{cache_hits} cache hit{'s' * (cache_hits != 1)}", f"{errors} error{'s' * (errors != 1)}"
    counts = [" " + ", ".join(parts) for parts in ([rows, rate, hits, failed], [rows, rate, failed], [rows, failed],
                                                   [rows])]
    candidates = [f" [{label}]{counts[0]}"] * bool(label) + counts
    return next((text for text in candidates if len(text) <= room), "")


class StatusLine:
    """A few columns of ours after pytest's current line, written outside capture with backspaces,
    never wider than what is left of the screen's line so that they never wrap."""

    def __init__(self, writer: Any, capture: Any) -> None:
        self.writer = writer  # pytest's TerminalWriter
        self.capture = capture  # pytest's CaptureManager
        self.width = 0  # columns of ours on the screen now

    def show(self, text: Callable[[int], str]) -> None:
        """Replace what we show with ``text(room)``, ASCII in at most ``room`` columns; ``""`` erases it."""
        with self.capture.global_and_fixture_disabled():  # also lets the terminal's size be read
            new = text(self._room())
            if new or self.width:
                pad = max(0, self.width - len(new))
                self.writer.write_raw("\b" * self.width + new + " " * pad + "\b" * pad, flush=True)
        self.width = len(new)

    def _room(self) -> int:
        """Columns left on the screen's line: its real width, as pytest's may differ (it takes 80 under 40)."""
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (OSError, ValueError, AttributeError):
            columns = self.writer.fullwidth
        used = self.writer.width_of_current_line
        return columns - used % columns - 1 if used >= 0 and columns > 0 else 0


class CellProgress:
    """Counts one cell's finished rows and redraws its status; the engine calls it from one thread."""

    def __init__(self, line: StatusLine, label: str, total: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.line = line
        self.label = label
        self.total = total
        self.clock = clock
        self.started = clock()
        self.drawn = float("-inf")
        self.done = self.cache_hits = self.errors = 0

    def row_done(self, row: Row) -> None:
        self.done += 1
        self.cache_hits += row.cache_hits
        self.errors += row.failed

    def tick(self) -> None:
        now = self.clock()
        if now - self.started < DELAY or now - self.drawn < INTERVAL:
            return
        self.drawn = now
        seconds = now - self.started
        self.line.show(lambda room: status_text(self.label, self.done, self.total, seconds, self.cache_hits,
                                                self.errors, room))

    def close(self) -> None:
        if self.line.width:
            self.line.show(lambda room: "")
