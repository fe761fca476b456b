"""The report folder: the document as JSON, and every format rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..scrub import scrub, write_json
from .csv_files import write_csv
from .html import HTML, write_html

DOCUMENT = "report.json"


def write_reports(document: Mapping[str, Any], folder: Path) -> None:
    """report.json keeps each cell's metrics in the order they were reported (built-ins, then each
    evaluator's: its logged metrics first), the order the primary metric is chosen by. Every file is
    written from the scrubbed document (no known secret, any string writable), each one whole."""
    document = scrub(document)
    write_json(folder / DOCUMENT, document, indent=1)
    write_csv(document, folder)
    write_html(document, folder / HTML)
