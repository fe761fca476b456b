"""Lines at the end of the terminal output."""

from __future__ import annotations

from typing import Any, Mapping

from ..metric_names import shown_name
from ..thresholds import threshold_text, verdict_word
from .explain import best_score, variants_line

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
MAX_FLAKY_IDS = 5  # row identities named per flaky metric; report.json lists them all
MAX_EVALUATOR_COLUMNS = 3


def comparison_tables(document: Mapping[str, Any], verbosity: int = 0) -> list[str]:
    """Per flow: its cells as rows, the metrics that matter as columns, failing thresholds marked
    with ``!``, the primary and gated metrics with their 95% interval (``0.71 [0.52, 0.85]``), and the best
    cell marked with ``*``. ``-qq`` leaves them out."""
    if verbosity < -1:
        return []
    lines: list[str] = []
    for flow in document["flows"]:
        columns = _columns(flow)
        spread = _with_interval(flow)
        header = ["", "cell", *columns, "verdict"]
        table = [header]
        for cell in flow["cells"]:
            failed = {name for v in cell["verdicts"] if not v["passed"] for name in _shown_as(v, cell)}
            values = [_value(cell["metrics"].get(name), name in failed)
                      + (_interval(cell.get("intervals", {}), name) if name in spread else "") for name in columns]
            mark = "*" if cell["config"] == flow["best"] else ""
            table.append([mark, cell["cell"].removeprefix(f"{flow['flow']}-"), *values, _verdict(cell)])
        count = f"{len(flow['cells'])} cell{'s' * (len(flow['cells']) != 1)}"
        score = best_score(flow)
        if flow["best"] and score:  # the score it was chosen on, then why
            lines += [f"promptflow: flow {flow['flow']}, {count}; best: {flow['best']}, {score}",
                      f"  why: {flow['best_reason']}"]
        else:
            best = f"best: {flow['best']}, " if flow["best"] else "no best cell: "
            why = _why_no_metric(flow) or flow["best_reason"]
            lines.append(f"promptflow: flow {flow['flow']}, {count}; {best}{why}")
        if flow["best"]:
            from .selection import selection_line

            chosen = selection_line(flow.get("selection"), flow["primary_metric"])
            lines += [chosen] if chosen else []
        described = variants_line(flow.get("variants") or {})
        lines += [described] if described else []
        lines += _ran_elsewhere(flow)
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines += ["  " + "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
                  for row in table]
    return lines


def _ran_elsewhere(flow: Mapping[str, Any]) -> list[str]:
    """The line saying which cells ran elsewhere (``--promptflow-backend azureml``), whose LLM calls are unknown."""
    where = [cell["ran_in"] for cell in flow["cells"] if cell.get("ran_in")]
    if not where:
        return []
    return [f"  {len(where)} cell{'s' * (len(where) != 1)} ran in {', '.join(where)}: LLM calls, tokens, cost and "
            "latency are not counted here (unknown, not zero) and no answer went to the LLM store"]


def _why_no_metric(flow: Mapping[str, Any]) -> str:
    """Why a flow has no metric to pick its best by, when its flow errored: ``every row failed (ValueError: boom
    row)``, or ``the flow did not run`` (every item failed before its cell ran); "" otherwise."""
    if flow["best"] or flow["primary_metric"]:
        return ""
    rows = [row for cell in flow["cells"] for row in cell["rows"]]
    errors = [row["error"] for row in rows if row.get("error")]
    if rows and len(errors) == len(rows):
        return f"every row failed, first: {_clip(errors[0])}"
    if not rows and all(cell["outcome"] in ("failed", "error") for cell in flow["cells"]):
        return "the flow did not run: see its items' failures"
    return ""


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _columns(flow: Mapping[str, Any]) -> list[str]:
    from .best import built_in

    aliases = flow.get("metric_aliases") or {}
    seen: dict[str, None] = {}
    for cell in flow["cells"]:
        for name in cell["metrics"]:
            if not built_in(name) and "." not in name and name not in aliases:
                seen.setdefault(name)
    primary = flow["primary_metric"] and shown_name(flow["primary_metric"], aliases)
    gated = {shown_name(v["metric"], aliases) for cell in flow["cells"] for v in cell["verdicts"]}
    evaluator = [primary] if primary else []
    evaluator += [name for name in seen if name in gated and name != primary]  # every gated one, then others
    evaluator += [name for name in seen if name not in evaluator][:max(MAX_EVALUATOR_COLUMNS - len(evaluator), 0)]
    after = [name for name in COLUMNS_AFTER if name not in evaluator]
    hidden: dict[str, None] = {}  # failing metrics no column would show
    for cell in flow["cells"]:
        for verdict in cell["verdicts"]:
            if not verdict["passed"] and not _shown_as(verdict, cell) & {*evaluator, *after}:
                hidden.setdefault(shown_name(verdict["metric"], aliases))
    return evaluator + list(hidden) + after


def _shown_as(verdict: Mapping[str, Any], cell: Mapping[str, Any]) -> set[str]:
    """The columns a verdict's metric may show under: its name, the name the reports show for it
    (``metric_names``: ``sentiment_eval.accuracy`` and ``score`` show as ``accuracy``), and for
    ``evaluator.metric`` the short name when that holds the same value (a document without aliases)."""
    from .best import built_in

    metric, metrics = verdict["metric"], cell["metrics"]
    names = {metric, shown_name(metric, cell.get("aliases") or {})}
    short = metric.partition(".")[2]
    if not built_in(metric) and short in metrics and metrics[short] == metrics.get(metric):
        names.add(short)
    return names


def _with_interval(flow: Mapping[str, Any]) -> set[str]:
    """The columns whose interval the table shows: the primary metric and every gated one."""
    gated = {name for cell in flow["cells"] for v in cell["verdicts"] for name in _shown_as(v, cell)}
    return gated | ({flow["primary_metric"]} if flow["primary_metric"] else set())


def _interval(intervals: Mapping[str, Any], name: str) -> str:
    """`` [0.52, 0.85]``: a metric's 95% interval, short; nothing for a metric without one, ``-`` for a bound
    that does not exist (one row)."""
    if f"{name}.ci_low" not in intervals:
        return ""
    low, high = (intervals[f"{name}.{side}"] for side in ("ci_low", "ci_high"))
    return f" [{'-' if low is None else f'{low:.2g}'}, {'-' if high is None else f'{high:.2g}'}]"


def _value(value: float | None, failed: bool) -> str:
    text = "-" if value is None else f"{value:.4g}"
    return text + ("!" if failed else "")


def _verdict(cell: Mapping[str, Any]) -> str:
    failed = [f"{v['metric']} {threshold_text(v)}" for v in cell["verdicts"] if not v["passed"]]  # as declared
    if failed:
        return "FAIL " + "; ".join(dict.fromkeys(failed))
    word = {"passed": "ok", "skipped": "skipped"}.get(cell["outcome"], cell["outcome"].upper())
    underpowered = [verdict_word(v) for v in cell["verdicts"] if v.get("underpowered") and v.get("holds")]
    return underpowered[0] if word == "ok" and underpowered else word  # ok (underpowered: MDE 0.08 > 0.05)


def flaky_lines(document: Mapping[str, Any], verbosity: int = 0) -> list[str]:
    """Per cell whose rows ran more than once: how many rows were flaky on which metric, e.g.
    ``promptflow: cell sentiment-small (repeat 3): flaky rows: match 2 of 5 (r1, r4); error_rate 1 of 5 (r4)``."""
    if verbosity < -1:
        return []
    lines = []
    for cell in (cell for flow in document["flows"] for cell in flow["cells"] if cell.get("flaky")):
        rows = len(cell["rows"]) // cell["repeats"]
        by_metric: dict[str, list[str]] = {}
        for entry in cell["flaky"]:
            by_metric.setdefault(entry["metric"], []).append(str(entry["id"]))
        parts = [f"{metric} {len(ids)} of {rows} ({_some(ids)})" for metric, ids in by_metric.items()]
        lines.append(f"promptflow: cell {cell['cell']} (repeat {cell['repeats']}): flaky rows: {'; '.join(parts)}")
    return lines


def _some(names: list[str]) -> str:
    """The first ``MAX_FLAKY_IDS`` names, then ``...`` if there are more."""
    return ", ".join(names[:MAX_FLAKY_IDS]) + (", ..." if len(names) > MAX_FLAKY_IDS else "")


def parity_lines(document: Mapping[str, Any], verbosity: int = 0) -> list[str]:
    """Per cell with a twin: whether parity holds, then a line per check (requests, outputs, each metric's
    equivalence, errors, latency and cost), e.g. ``  accuracy ~= twin ± 0.03 at 95%: difference +0.00 [...]``."""
    if verbosity < -1:
        return []
    lines = []
    for cell in (cell for flow in document["flows"] for cell in flow["cells"] if cell.get("parity")):
        parity = cell["parity"]
        verdict = "holds" if parity["passed"] else f"FAILS ({len(parity['failures'])} checks)"
        lines.append(f"promptflow: cell {cell['cell']}: parity of {parity['original']} with {parity['twin']} "
                     f"{verdict}")
        lines += [f"  {line}" for line in parity["lines"]]
    return lines
