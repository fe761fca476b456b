"""The text a failing item prints: a metric-versus-threshold table and the worst rows."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from ..scrub import scrub_text
from ..thresholds import Verdict, verdict_word

MAX_VALUE_CHARS = 80


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4g}"


def verdict_table(verdicts: Sequence[Verdict]) -> list[str]:
    """metric, value, threshold, verdict; the checked bound when a threshold has a confidence level; and for a
    baseline threshold the baseline's value and the difference (whose bound is checked), then a line per
    comparison saying what it could detect."""
    bounded = any(v.threshold.level is not None for v in verdicts)
    compared = any(v.comparison is not None for v in verdicts)
    rows = [("metric", "value", "threshold", *(("baseline", "difference") if compared else ()),
             *(("bound",) if bounded else ()), "verdict")]
    rows += [(v.threshold.metric, _fmt(v.actual), str(v.threshold).removeprefix(f"{v.threshold.metric} "),
              *(_against(v) if compared else ()), *((_bound(v),) if bounded else ()), verdict_word(v.record()))
             for v in verdicts]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return table + list(dict.fromkeys(power_line(v.record()) for v in verdicts if v.comparison is not None))


def _against(verdict: Verdict) -> tuple[str, str]:
    """The baseline's value and candidate - baseline, over the paired rows; ``-`` for other thresholds."""
    compared = verdict.comparison
    return ("-", "-") if compared is None else (_fmt(compared.baseline_value), f"{compared.difference:+.4g}")


def power_line(verdict: Mapping[str, Any]) -> str:
    """``accuracy vs baseline cell:defaults: 40 paired rows (0 unpaired), 12 discordant; MDE 0.11 at 80% power,
    power 0.31 for 0.05``: what a baseline comparison could detect, said out loud."""
    mde = "none detectable" if verdict["mde"] is None else f"{verdict['mde']:.2g}"
    return (f"{verdict['metric']} vs baseline {verdict['baseline']}: {verdict['n']} paired rows ({verdict['unpaired']} "
            f"unpaired), {verdict['discordant']} discordant; MDE {mde} at 80% power, power {verdict['power']:.2f} "
            f"for {verdict['min_effect']:g}")


def _bound(verdict: Verdict) -> str:
    """``0.62 (lower, 95%)``: the one-sided bound a threshold with a level checks; ``-`` without a level."""
    if verdict.threshold.level is None:
        return "-"
    return f"{_fmt(verdict.bound)} ({verdict.threshold.bound_side}, {verdict.threshold.level * 100:g}%)"


def worst_rows_lines(worst: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per row: its index, score or error, inputs, and the last LLM answer of its transcript (else its
    outputs), shortened and scrubbed: the failure text reaches the terminal and the JUnit file."""
    lines = ["worst rows:"] if worst else []
    for row in worst:
        result = f"error {row['error']}" if row.get("error") else f"score {_fmt(row.get('score'))}"
        if row.get("answer") is not None:
            got = f" -> last answer {_short(json.dumps(row['answer'], ensure_ascii=False))}"
        else:
            got = "" if row.get("error") else f" -> {_short(row.get('outputs'))}"
        repeat = f", repeat {row['repeat']}" if "repeat" in row else ""
        lines.append(scrub_text(f"  row {row['row']}{repeat}: {result}: {_short(row.get('inputs'))}{got}"))
    return lines


def log_lines() -> list[str]:
    """``promptflow's log: <path>``, once promptflow wrote to it: the failed rows' tracebacks are there."""
    from ..promptflow_log import written

    path = written()
    return [] if path is None else [f"promptflow's log (failed rows' tracebacks): {path}"]


def failure_text(cell_id: str, rows: int, verdicts: Sequence[Verdict], worst: Sequence[Mapping[str, Any]],
                 error_rows: int = 0) -> str:
    failed = [v for v in verdicts if not v.passed]
    head = f"{len(failed)} of {len(verdicts)} thresholds failed for cell {cell_id} ({_rows(rows, error_rows)})"
    return "\n".join([head, *verdict_table(verdicts), *worst_rows_lines(worst), *log_lines()])


def threshold_failure(cell_id: str, run: Any, verdicts: Sequence[Verdict], metrics: Mapping[str, Any]) -> str | None:
    """The failure text of a cell whose verdicts failed (its worst rows for the first failed metric), else
    None: what an experiment.yaml item and ``flow_run.expect`` both print."""
    failed = [v for v in verdicts if not v.passed]
    if not failed:
        return None
    worst = getattr(metrics.get(failed[0].threshold.metric), "worst", ())
    return failure_text(cell_id, len(run.rows), verdicts, worst, sum(row.failed for row in run.rows))


def _rows(rows: int, error_rows: int) -> str:
    """``5 rows``, or ``5 rows, 2 failed and scored worst`` when some rows' flow failed."""
    return f"{rows} rows" + (f", {error_rows} failed and scored worst" if error_rows else "")


def metric_assertion_lines(op: str, left: Any, right: Any) -> list[str]:
    """What ``assert result.metrics["accuracy"] >= 0.6`` prints when it fails: a line and the threshold table,
    short enough that pytest's truncation of assertion explanations never cuts it (``metric_details`` has the
    rest)."""
    from ..evaluation import MetricValue
    from ..thresholds import OPERATORS, Threshold

    metric = left if isinstance(left, MetricValue) else right
    other = right if metric is left else left
    if op not in OPERATORS or not isinstance(other, (int, float)):
        return [f"{metric.name} = {float(metric):.4g} for cell {metric.cell_id} "
                f"({_rows(metric.rows, metric.error_rows)})"]
    if metric is right:  # 0.6 <= m  reads as  m >= 0.6
        op = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}.get(op, op)
    verdict = Verdict(Threshold(metric.name, op, float(other)), float(metric))
    return [f"{metric.name} {float(metric):.4g} {op} {float(other):g} failed for cell {metric.cell_id} "
            f"({_rows(metric.rows, metric.error_rows)})", *verdict_table([verdict])]


def metric_details(left: Any, right: Any) -> list[str]:
    """The worst rows of a failing metric assertion's metric, and the log file: a section of the item's report."""
    from ..evaluation import MetricValue

    metric = left if isinstance(left, MetricValue) else right
    return [*worst_rows_lines(metric.worst), *log_lines()]
