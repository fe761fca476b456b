"""pytest-html extras: each promptflow item's metrics and threshold verdicts, in its row of the
``--html`` report. They ride on the test report (``report.extras``), so they cross from xdist
workers to the controller that writes the page. pytest-html is imported only when it is in use."""

from __future__ import annotations

from html import escape
from typing import Any, Mapping

import pytest

from ..thresholds import threshold_text

FAILED_ROW = ' style="color:#b00;font-weight:bold"'  # cells are styled by the page's ``#results-table td``


def html_active(config: pytest.Config) -> bool:
    """Whether this run writes a pytest-html report (also true on xdist workers of such a run)."""
    return config.pluginmanager.hasplugin("html") and bool(config.getoption("htmlpath", None))


def attach_html_extras(config: pytest.Config, report: pytest.TestReport, record: Mapping[str, Any]) -> None:
    """Append the item's metrics table to ``report.extras`` when ``--html`` is on."""
    if not html_active(config):
        return
    from pytest_html import extras

    report.extras = [*getattr(report, "extras", []), extras.html(metrics_fragment(record))]  # type: ignore[attr-defined]


def metrics_fragment(record: Mapping[str, Any]) -> str:
    """The item's cell and a metric / value / threshold / verdict table, every value escaped."""
    from .best import built_in

    thresholds: dict[str, list[str]] = {}
    failed: set[str] = set()
    for verdict in record["verdicts"]:
        thresholds.setdefault(verdict["metric"], []).append(threshold_text(verdict))
        if not verdict["passed"]:
            failed.add(verdict["metric"])
    metrics: dict[str, Any] = dict(record["metrics"])
    aliases = record.get("aliases") or {}  # another name of a number shown under its own (metric_names)
    names = [*thresholds, *(n for n in metrics if not built_in(n) and n not in thresholds and n not in aliases),
             *(n for n in metrics if built_in(n) and n not in thresholds)]
    rows = []
    for name in names:
        value = metrics.get(name)
        if value is None:  # a verdict on a value the record does not carry
            value = next((v["actual"] for v in record["verdicts"] if v["metric"] == name), None)
        verdict = "FAIL" if name in failed else "ok" if name in thresholds else ""
        cells = [name, "-" if value is None else f"{value:.4g}", "; ".join(dict.fromkeys(thresholds.get(name, []))),
                 verdict]
        style = FAILED_ROW if verdict == "FAIL" else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{escape(text)}</td>" for text in cells) + "</tr>")
    header = "".join(f"<th>{text}</th>" for text in ("metric", "value", "threshold", "verdict"))
    failing = f", {len(failed)} metric{'s' * (len(failed) > 1)} failing" if failed else ""
    ran = f"{len(record['rows'])} rows" if record["rows"] else "not run"
    title = (f"promptflow cell <code>{escape(record['cell'])}</code> (dataset {escape(record['dataset'])}, "
             f"{ran}){failing}")
    return (f'<div class="promptflow-metrics"><p>{title}</p><table><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")
