"""Two runs' documents cell by cell: each metric's value in both and its change (B - A) with the paired
difference's 95% interval where the metric is the mean of a per-row score, the rows whose 0/1 score or
error flipped, and the cells only one run has. Printed by ``pytest-promptflow compare`` and rendered as
one self-contained page (``compare.html``), escaped like report.html."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError
from ..pairing import ScoredRow, Side, pair, row_value
from ..scrub import write_text
from .best import built_in

LEVEL = 0.95
SHOWN_BUILT_INS = ("error_rate", "latency.p95", "cost.total", "tokens.total")
MAX_FLIPS_PRINTED = 10  # per cell in the terminal; the page lists them all
COMPARE_HTML = "compare.html"


@dataclass(frozen=True)
class MetricChange:
    name: str
    a: float | None
    b: float | None
    interval: tuple[float, float] | None = None  # paired 95% interval of B - A, over the rows both ran

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Flip:
    identity: str
    index: int | None  # the row's index in B's dataset
    column: str  # a 0/1 score's column, or "error"
    a: str
    b: str


@dataclass(frozen=True)
class CellChange:
    flow: str
    cell: str
    outcome: tuple[str, str]
    metrics: tuple[MetricChange, ...]
    flips: tuple[Flip, ...]


@dataclass(frozen=True)
class Comparison:
    a: str  # what each side is, e.g. "run 3f2a1b2c3d4e (commit abc1234, 2026-12-03T19:00:00+00:00)"
    b: str
    cells: tuple[CellChange, ...]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]


def describe(document: Mapping[str, Any], where: str) -> str:
    """``run <id> (commit <short>, <time>) from <where>``: a side as the output names it."""
    environment = document.get("environment", {})
    facts = [f"commit {str(environment['git_commit'])[:7]}"] if environment.get("git_commit") else []
    facts += [str(environment["time"])] if environment.get("time") else []
    said = f" ({', '.join(facts)})" if facts else ""
    return f"run {environment.get('run_id') or '?'}{said} from {where}"


def compare_documents(a: Mapping[str, Any], b: Mapping[str, Any], label_a: str, label_b: str) -> Comparison:
    """The per-cell differences of B against A (cells matched by flow and cell id)."""
    cells_a, cells_b = _cells(a), _cells(b)
    changes = tuple(_cell_change(cells_a[key], cells_b[key]) for key in sorted(cells_a) if key in cells_b)
    return Comparison(label_a, label_b, changes, tuple(cells_a[key]["cell"] for key in sorted(cells_a)
                                                       if key not in cells_b),
                      tuple(cells_b[key]["cell"] for key in sorted(cells_b) if key not in cells_a))


def _cells(document: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(flow["flow"], cell["cell"]): cell for flow in document["flows"] for cell in flow["cells"]}


def _cell_change(a: Mapping[str, Any], b: Mapping[str, Any]) -> CellChange:
    side_a, side_b = side(a), side(b)
    names = list(dict.fromkeys([*a["metrics"], *b["metrics"]]))
    names = [name for name in names if not built_in(name)] + [name for name in SHOWN_BUILT_INS if name in names]
    metrics = tuple(MetricChange(name, a["metrics"].get(name), b["metrics"].get(name),
                                 _interval(side_a, side_b, _column(name, b["metrics"].get(name), side_b), b["cell"]))
                    for name in names)
    indexes = {str(row.get("id", row["index"])): row["index"] for row in b["rows"]}
    return CellChange(a["flow"], a["cell"], (a["outcome"], b["outcome"]), metrics, flips(side_a, side_b, indexes))


def side(cell: Mapping[str, Any]) -> Side:
    """A report cell's rows as a pairing side (rows by identity, their scores, whether their flow failed)."""
    return Side(cell["cell"], tuple(ScoredRow(str(row.get("id", row["index"])), row.get("scores") or {},
                                              row.get("error") is not None, row.get("outputs"),
                                              row.get("repeat", 0)) for row in cell["rows"]))


def _column(metric: str, value: float | None, rows: Side) -> str | None:
    """The per-row column ``metric`` is the mean of: ``ev.score`` itself, or ``<evaluator>.<metric>``, or for
    an aggregation's logged metric the one column whose mean it is (evaluation.mean_columns' rule)."""
    from ..evaluation import mean_columns

    keys = list(dict.fromkeys(key for row in rows.rows for key in row.scores))
    for column in [metric, *(key for key in keys if key.partition(".")[2] == metric)]:
        if any(row_value(row, column) is not None for row in rows.rows):
            return column
    if value is None:
        return None
    columns = {key: [v for v in rows.values(key).values() if v is not None] for key in keys}
    return mean_columns({metric: value}, {key: found for key, found in columns.items() if found}).get(metric)


def _interval(a: Side, b: Side, column: str | None, seed: str) -> tuple[float, float] | None:
    """The paired two-sided 95% interval of B - A on ``column`` (Tango for 0/1 scores, t for others); None
    when the rows do not pair (no shared identity, duplicate identities) or there are too few."""
    from .. import stats

    if column is None:
        return None
    try:
        pairs = pair(b, a, column, 1.0, None)
        x, y = pairs.candidate, pairs.baseline
        if all(value in (0.0, 1.0) for value in x + y):
            interval: Any = stats.paired_difference(x, y, LEVEL, sides=2)
        else:
            interval = stats.paired_mean_difference(x, y, LEVEL, seed=seed, sides=2)
    except (SpecError, ValueError, ZeroDivisionError):
        return None
    low, high = float(interval.low), float(interval.high)
    return None if low != low or high != high else (low, high)  # NaN: too few rows


def flips(a: Side, b: Side, indexes: Mapping[str, int]) -> tuple[Flip, ...]:
    """Rows whose flow failed in one run and not the other, and rows whose 0/1 score changed."""
    errors_a = {row.identity: row.failed for row in a.rows if row.repeat == 0}
    errors_b = {row.identity: row.failed for row in b.rows if row.repeat == 0}
    found = [Flip(identity, indexes.get(identity), "error", _error(errors_a[identity]), _error(failed))
             for identity, failed in errors_b.items() if identity in errors_a and errors_a[identity] != failed]
    columns = dict.fromkeys(key for row in (*a.rows, *b.rows) for key in row.scores)
    for column in columns:
        values_a, values_b = a.values(column), b.values(column)
        for identity, value in values_b.items():
            before = values_a.get(identity)
            if value in (0.0, 1.0) and before in (0.0, 1.0) and value != before and not (
                    errors_a.get(identity) or errors_b.get(identity)):
                found.append(Flip(identity, indexes.get(identity), column, f"{before:g}", f"{value:g}"))
    return tuple(found)


def _error(failed: bool) -> str:
    return "error" if failed else "ok"


# -- text ---------------------------------------------------------------------------------------------------------


def compare_lines(comparison: Comparison) -> list[str]:
    """The comparison for a terminal: per cell its outcome, its metrics' table, its flipped rows."""
    lines = [f"promptflow compare: A = {comparison.a}", f"                    B = {comparison.b}"]
    same = [cell.cell for cell in comparison.cells if unchanged(cell)]
    for cell in (cell for cell in comparison.cells if not unchanged(cell)):
        outcome = cell.outcome[0] if cell.outcome[0] == cell.outcome[1] else " -> ".join(cell.outcome)
        lines.append(f"cell {cell.cell}: {outcome}")
        table = [["metric", "A", "B", "change", f"paired {LEVEL:.0%} interval"]]
        table += [[m.name, _number(m.a), _number(m.b), _signed(m.change), _interval_text(m.interval)]
                  for m in cell.metrics]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines += ["  " + "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
                  for row in table]
        if cell.flips:
            shown = "; ".join(f"row {f.index} {f.column} {f.a} -> {f.b}" for f in cell.flips[:MAX_FLIPS_PRINTED])
            more = f"; ... ({len(cell.flips) - MAX_FLIPS_PRINTED} more)" if len(cell.flips) > MAX_FLIPS_PRINTED else ""
            lines.append(f"  flipped rows ({len(cell.flips)}): {shown}{more}")
    for name, cells in (("unchanged but for latency", same), ("only in A", comparison.only_a),
                        ("only in B", comparison.only_b)):
        if cells:
            lines.append(f"{name} ({len(cells)}): {', '.join(cells)}")
    if not comparison.cells:
        lines.append("no cell is in both runs")
    return lines


def unchanged(cell: CellChange) -> bool:
    """The same outcome, no flipped row, every metric but latency the same."""
    return cell.outcome[0] == cell.outcome[1] and not cell.flips and all(
        m.change == 0 or (m.a is None and m.b is None) for m in cell.metrics if not m.name.startswith("latency."))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _signed(value: float | None) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:+.4g}")


def _interval_text(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:+.3g}, {interval[1]:+.3g}]"


# -- page ---------------------------------------------------------------------------------------------------------

STYLE = ("body{font:14px system-ui,sans-serif;margin:24px;color:#101828}table{border-collapse:collapse;"
         "margin:8px 0 16px}th,td{border:1px solid #d0d5dd;padding:3px 8px;text-align:left}th{background:#f2f4f7}"
         ".num{text-align:right;font-variant-numeric:tabular-nums}.up{color:#067647}.down{color:#b42318}"
         ".muted{color:#667085}")


def write_compare_html(comparison: Comparison, path: Path) -> Path:
    """The comparison as one page: no script, its only style inline and allowed by hash, every value escaped."""
    return write_text(path, compare_html(comparison))


def compare_html(comparison: Comparison) -> str:
    from .html import _csp_hash

    body = [f"<h1>promptflow compare</h1><p>A = {escape(comparison.a)}<br>B = {escape(comparison.b)}</p>"]
    body += [_cell_html(cell) for cell in comparison.cells]
    for name, cells in (("A", comparison.only_a), ("B", comparison.only_b)):
        if cells:
            body.append(f"<h2>Only in {name}</h2><ul>{''.join(f'<li>{escape(c)}</li>' for c in cells)}</ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src "
            f"'{_csp_hash(STYLE)}'\"><title>promptflow compare</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def _cell_html(cell: CellChange) -> str:
    outcome = " \u2192 ".join(dict.fromkeys(cell.outcome))
    rows = "".join(
        f"<tr><td>{escape(m.name)}</td><td class=\"num\">{_number(m.a)}</td><td class=\"num\">{_number(m.b)}</td>"
        f"<td class=\"num {_direction(m)}\">{_signed(m.change)}</td>"
        f"<td class=\"num\">{escape(_interval_text(m.interval))}</td></tr>" for m in cell.metrics)
    flipped = "".join(f"<tr><td class=\"num\">{f.index}</td><td>{escape(f.identity)}</td><td>{escape(f.column)}</td>"
                      f"<td>{escape(f.a)}</td><td>{escape(f.b)}</td></tr>" for f in cell.flips)
    flips_table = (f"<h3>Flipped rows ({len(cell.flips)})</h3><table><tr><th>row</th><th>identity</th>"
                   f"<th>column</th><th>A</th><th>B</th></tr>{flipped}</table>" if cell.flips
                   else "<p class=\"muted\">no row flipped</p>")
    return (f"<h2>{escape(cell.cell)} <span class=\"muted\">{escape(outcome)}</span></h2><table><tr><th>metric</th>"
            f"<th>A</th><th>B</th><th>change</th><th>paired {LEVEL:.0%} interval</th></tr>{rows}</table>{flips_table}")


def _direction(change: MetricChange) -> str:
    from .best import lower_is_better

    if not change.change:
        return ""
    better = (change.change < 0) if lower_is_better(change.name) else (change.change > 0)
    return "up" if better else "down"
