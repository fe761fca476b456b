"""Lines at the end of the terminal output."""

from __future__ import annotations

from typing import Any, Mapping

from ..thresholds import threshold_text

OUTCOMES = ("live", "from store", "failed", "missing from store")


def llm_summary(session: Any) -> list[str]:
    """How the session's LLM calls were answered, e.g. ``promptflow: 120 LLM calls: 0 live, 120 from store``."""
    tally = session.llm_tally()
    total = sum(tally.values())
    if not total:
        return []
    parts = ", ".join(f"{tally[outcome]} {outcome}" for outcome in OUTCOMES if tally[outcome] or outcome == "live")
    return [f"promptflow: {total} LLM calls ({session.llm.mode} mode, store {session.llm.store}): {parts}"]


COLUMNS_AFTER = ("error_rate", "latency.p95", "cost.total")
MAX_EVALUATOR_COLUMNS = 3


def comparison_tables(document: Mapping[str, Any], verbosity: int = 0) -> list[str]:
    """Per flow: its cells as rows, the metrics that matter as columns, failing thresholds marked
    with ``!``, and the best cell marked with ``*``. ``-qq`` leaves them out."""
    if verbosity < -1:
        return []
    lines: list[str] = []
    for flow in document["flows"]:
        columns = _columns(flow)
        header = ["", "cell", *columns, "verdict"]
        table = [header]
        for cell in flow["cells"]:
            failed = {name for v in cell["verdicts"] if not v["passed"] for name in _shown_as(v, cell)}
            values = [_value(cell["metrics"].get(name), name in failed) for name in columns]
            mark = "*" if cell["config"] == flow["best"] else ""
            table.append([mark, cell["cell"].removeprefix(f"{flow['flow']}-"), *values, _verdict(cell)])
        best = f"best: {flow['best']}, " if flow["best"] else "no best cell: "
        count = f"{len(flow['cells'])} cell{'s' * (len(flow['cells']) != 1)}"
        lines.append(f"promptflow: flow {flow['flow']}, {count}; {best}{flow['best_reason']}")
        if flow["best"]:
            from .selection import selection_line

            chosen = selection_line(flow.get("selection"), flow["primary_metric"])
            lines += [chosen] if chosen else []
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines += ["  " + "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
                  for row in table]
    return lines


def _columns(flow: Mapping[str, Any]) -> list[str]:
    from .best import built_in

    seen: dict[str, None] = {}
    for cell in flow["cells"]:
        for name in cell["metrics"]:
            if not built_in(name) and "." not in name:
                seen.setdefault(name)
    primary = flow["primary_metric"]
    evaluator = [primary] if primary else []
    evaluator += [name for name in seen if name != primary][:MAX_EVALUATOR_COLUMNS - len(evaluator)]
    after = [name for name in COLUMNS_AFTER if name not in evaluator]
    hidden: dict[str, None] = {}  # failing metrics no column would show
    for cell in flow["cells"]:
        for verdict in cell["verdicts"]:
            if not verdict["passed"] and not _shown_as(verdict, cell) & {*evaluator, *after}:
                hidden.setdefault(verdict["metric"])
    return evaluator + list(hidden) + after


def _shown_as(verdict: Mapping[str, Any], cell: Mapping[str, Any]) -> set[str]:
    """The columns a verdict's metric may show under: its name, and for ``evaluator.metric`` the
    short name when that holds the same value (the short name is the first evaluator's)."""
    from .best import built_in

    metric, metrics = verdict["metric"], cell["metrics"]
    short = metric.partition(".")[2]
    if not built_in(metric) and short in metrics and metrics[short] == metrics.get(metric):
        return {metric, short}
    return {metric}


def _value(value: float | None, failed: bool) -> str:
    text = "-" if value is None else f"{value:.4g}"
    return text + ("!" if failed else "")


def _verdict(cell: Mapping[str, Any]) -> str:
    failed = [f"{v['metric']} {threshold_text(v)}" for v in cell["verdicts"] if not v["passed"]]
    if failed:
        return "FAIL " + "; ".join(dict.fromkeys(failed))
    return {"passed": "ok", "skipped": "skipped"}.get(cell["outcome"], cell["outcome"].upper())
