"""Parity of a flow and its migrated twin on the same rows: requests, outputs, metrics, errors, latency, cost.

Pure: both versions come as ``Version``s (from a run, or from a stored report's rows) and the checks give a
``Parity`` whose ``record`` is plain data for report.json. Request parity, errors and metric equivalence gate;
output agreement, latency and cost are reported only.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .pairing import Side, pair, row_value

LEVEL = 0.95
SHOWN_ROWS = 3  # disagreeing rows and twin-only failures named in a line
#: request parameters compared, with what the API takes when a request leaves one out; the model or deployment
#: is not compared (a twin usually names its model differently), nor what SDKs add of their own (stream, user, n)
PARAMETERS: Mapping[str, Any] = {"temperature": 1.0, "top_p": 1.0, "max_tokens": None, "stop": None,
                                 "response_format": None, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                                 "seed": None, "tools": None, "tool_choice": None}
_WORDS = re.compile(r"\S+|\s+")


@dataclass(frozen=True)
class VersionRow:
    """One row as a version ran it: identity, error, outputs, its flow's LLM calls (``LLMCall.as_json``)."""

    identity: str
    repeat: int
    error: str | None
    outputs: Mapping[str, Any] | None
    calls: tuple[Mapping[str, Any], ...] = ()
    latency: float | None = None
    cached: bool = False
    cost: float = 0.0


@dataclass(frozen=True)
class Version:
    """The original or the twin: ``label`` names it (``flow clf``), ``scores`` pairs its rows' scores."""

    label: str
    rows: tuple[VersionRow, ...]
    scores: Side
    aliases: Mapping[str, str] = field(default_factory=dict)  # a per-row column -> the metric it is the mean of


def version_of_run(label: str, run: Any, evaluations: Sequence[Any]) -> Version:
    """A run of the engine and its evaluations."""
    from .pairing import side_of_run

    rows = tuple(VersionRow(row.identity, row.repeat, f"{row.error_type}: {row.error_message}" if row.failed else None,
                            row.outputs, tuple(call.as_json() for call in row.calls), row.latency, row.cached,
                            row.cost) for row in run.rows)
    aliases = {f"{ev.evaluator}.{column}": metric for ev in evaluations for metric, column in ev.aliases.items()}
    return Version(label, rows, side_of_run(label, run, evaluations), aliases)


def version_of_cell(label: str, cell: Mapping[str, Any]) -> Version:
    """A cell of a stored report.json: its rows with their scores and their flow's calls (the judges' left out)."""
    from .pairing import ScoredRow

    rows, scored = [], []
    for row in cell.get("rows") or []:
        error = row.get("error")
        identity, repeat = str(row.get("id", row.get("index", ""))), int(row.get("repeat") or 0)
        calls = tuple(call for call in row.get("calls") or [] if call.get("evaluator") is None)
        rows.append(VersionRow(identity, repeat, error, row.get("outputs"), calls, row.get("latency"),
                               bool(row.get("cached")), float(row.get("cost") or 0.0)))
        scored.append(ScoredRow(identity, dict(row.get("scores") or {}), bool(error), row.get("outputs"), repeat))
    return Version(label, tuple(rows), Side(label, tuple(scored)))


# --- the checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One parity check: its line for the terminal and the failure, whether it gates, and its plain record."""

    name: str
    line: str
    passed: bool
    gated: bool
    record: Mapping[str, Any]


@dataclass(frozen=True)
class Parity:
    """Every check of one cell against its twin."""

    original: str
    twin: str
    checks: tuple[Check, ...]

    @property
    def failures(self) -> list[str]:
        return [check.line for check in self.checks if check.gated and not check.passed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def failure(self, cell: str) -> str:
        """The failure of a cell whose parity does not hold: a line per failing check."""
        return "\n".join([f"cell {cell}: parity of {self.original} with {self.twin} fails:",
                          *(f"  {line}" for line in self.failures)])

    def record(self) -> dict[str, Any]:
        """The cell's ``parity`` section of report.json."""
        return {"original": self.original, "twin": self.twin, "passed": self.passed, "failures": self.failures,
                "lines": [check.line for check in self.checks],
                **{check.name: dict(check.record, line=check.line, passed=check.passed, gated=check.gated)
                   for check in self.checks if check.name != "equivalence"},
                "equivalence": [dict(check.record, line=check.line, passed=check.passed)
                                for check in self.checks if check.name == "equivalence"]}


def parity(original: Version, twin: Version, margin: float, max_unpaired: float = 0.10, unseen: str = "") -> Parity:
    """All the checks: request parity, output agreement, each metric's equivalence within ``margin``, errors,
    latency and cost. Rows pair by identity (and repeat); none is dropped: a failed row is compared as failed.
    ``unseen`` says why one side's LLM requests were not seen here (a deployment's answers, a remote run): then
    request parity is not checked, and says why."""
    pairs = _paired_rows(original, twin)
    checks = [request_parity(pairs, unseen), output_agreement(pairs),
              *equivalence(original, twin, margin, max_unpaired), errors(original, twin, pairs), spend(original, twin)]
    return Parity(original.label, twin.label, tuple(checks))


Pairs = list[tuple[VersionRow, VersionRow]]


def _paired_rows(original: Version, twin: Version) -> Pairs:
    theirs = {(row.identity, row.repeat): row for row in twin.rows}
    return [(row, theirs[(row.identity, row.repeat)]) for row in original.rows if (row.identity, row.repeat) in theirs]


def request_parity(pairs: Pairs, unseen: str = "") -> Check:
    """Per row, the original's LLM calls and the twin's in order: the same messages and parameters. Rows that
    failed on either side are left to the error check (a failure cuts its calls short). Not checked when a side's
    requests were not seen (``unseen`` says why)."""
    if unseen:
        return Check("request", f"request parity: not checked ({unseen}: its LLM requests are not seen here)", True,
                     True, {"rows": len(pairs), "differing": None, "skipped": len(pairs), "first": None,
                            "unseen": unseen})
    compared = [(mine, theirs) for mine, theirs in pairs if mine.error is None and theirs.error is None]
    differing = [(mine, found) for mine, theirs in compared if (found := first_difference(mine.calls, theirs.calls))]
    calls = sum(len(mine.calls) + len(theirs.calls) for mine, theirs in compared)
    skipped = len(pairs) - len(compared)
    note = f" ({_rows(skipped)} that failed on a side left to the error check)" if skipped else ""
    record: dict[str, Any] = {"rows": len(compared), "differing": len(differing), "skipped": skipped, "first": None}
    if not calls:
        return Check("request", f"request parity: no LLM calls on either side to compare{note}", True, True, record)
    if not differing:
        return Check("request", f"request parity: the same requests on all {len(compared)} rows{note}", True, True,
                     record)
    row, found = differing[0]
    record["first"] = dict(found, row=row.identity)
    return Check("request", f"request parity: {len(differing)} of {len(compared)} rows differ{note}; first: row "
                 f"{row.identity}, {found['summary']}", False, True, record)


def first_difference(mine: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How the first differing call of a row differs ({} when they all match): its messages' word diff and
    line diff, the parameters that differ, or the number of calls."""
    for index, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        prompt_a, prompt_b = _prompt(a), _prompt(b)
        changed = {name: [plain_a, plain_b] for name in PARAMETERS
                   if (plain_a := _parameter(a, name)) != (plain_b := _parameter(b, name))}
        if prompt_a == prompt_b and not changed:
            continue
        parts = [f"messages: {word_diff(prompt_a, prompt_b)}"] if prompt_a != prompt_b else []
        parts += [f"{name} {json.dumps(a_value)} != {json.dumps(b_value)}" for name, (a_value, b_value) in
                  changed.items()]
        return {"call": index + 1, "summary": f"call {index + 1}: " + "; ".join(parts), "parameters": changed,
                "diff": [list(line) for line in line_diff(prompt_a, prompt_b)]}
    if len(mine) != len(theirs):
        return {"call": min(len(mine), len(theirs)) + 1, "parameters": {}, "diff": [],
                "summary": f"the original made {len(mine)} LLM call{'s' * (len(mine) != 1)}, the twin {len(theirs)}"}
    return {}


def _prompt(call: Mapping[str, Any]) -> str:
    """A call's messages as ``role: content`` lines, as the HTML report shows a prompt."""
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in call.get("messages") or [])


def _parameter(call: Mapping[str, Any], name: str) -> Any:
    """A request parameter as the API reads it: left out is its default, ``max_completion_tokens`` is
    ``max_tokens``, a lone stop word is a list of one, and an empty stop or a text response format is none."""
    given = call.get("parameters") or {}
    value = given.get(name, given.get("max_completion_tokens") if name == "max_tokens" else PARAMETERS[name])
    if name == "stop":
        value = [value] if isinstance(value, str) else value
        return value or None
    if name == "response_format" and isinstance(value, Mapping) and value.get("type") == "text":
        return None
    if name in ("temperature", "top_p", "presence_penalty", "frequency_penalty") and isinstance(value, int):
        return float(value)
    return None if value is None else json.loads(json.dumps(value, default=str))


def word_diff(a: str, b: str, context: int = 4) -> str:
    """The words that differ, ``[-removed-]{+added+}``, with ``context`` words around each change."""
    old, new = _WORDS.findall(a), _WORDS.findall(b)
    out: list[str] = []
    opcodes = difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes()
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            words = old[i1:i2]
            keep = 2 * context
            head = words[:keep] if n else []
            tail = words[-keep:] if n < len(opcodes) - 1 else []
            out.append("".join(words) if len(words) <= 2 * keep else "".join(head) + " ... " + "".join(tail))
            continue
        if i2 > i1:
            out.append("[-" + "".join(old[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + "".join(new[j1:j2]) + "+}")
    return " ".join("".join(out).split())


def line_diff(a: str, b: str) -> list[tuple[str, str]]:
    """The line diff the HTML report draws (``variant_specs.template_diff``: del, ins, same, gap)."""
    from .variant_specs import template_diff

    return template_diff(a, b)


def output_agreement(pairs: Pairs) -> Check:
    """Rows whose outputs are equal (as JSON, text stripped of surrounding whitespace); reported, not gated."""
    agree = [mine for mine, theirs in pairs if _normal(mine.outputs) == _normal(theirs.outputs)]
    rate = len(agree) / len(pairs) if pairs else 1.0
    apart = [{"row": mine.identity, "original": mine.outputs, "twin": theirs.outputs}
             for mine, theirs in pairs if _normal(mine.outputs) != _normal(theirs.outputs)]
    line = f"outputs agree on {len(agree)} of {len(pairs)} rows ({rate:.0%})"
    if apart:
        line += "; first disagreeing: " + ", ".join(
            f"row {d['row']}: {_short(d['original'])} vs {_short(d['twin'])}" for d in apart[:SHOWN_ROWS])
    return Check("outputs", line, True, False, {"rows": len(pairs), "agreeing": len(agree), "agreement": rate,
                                                "disagreeing": apart[:SHOWN_ROWS]})


def _normal(outputs: Any) -> Any:
    """Outputs as compared: plain JSON, text stripped (a failed row's None stays None)."""
    if isinstance(outputs, str):
        return outputs.strip()
    if isinstance(outputs, Mapping):
        return {str(k): _normal(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [_normal(v) for v in outputs]
    return outputs


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def equivalence(original: Version, twin: Version, margin: float, max_unpaired: float) -> list[Check]:
    """Each per-row score of the original: the 95% interval of twin - original, paired by row, within
    +-``margin``. A failed row scores its column's worst on either side. Too wide an interval is underpowered,
    with the rows that would do at the observed spread."""
    from .pairing import _per_row_name

    columns = dict.fromkeys(_per_row_name(key) for row in original.scores.rows for key in row.scores)
    shorts = [column.partition(".")[2] for column in columns]  # as the reports name a metric: short where unique
    names = {**{column: short for column, short in zip(columns, shorts, strict=True)
                if short and shorts.count(short) == 1}, **twin.aliases, **original.aliases}
    checks = []
    for column in (c for c in columns if any(row_value(row, c) is not None for row in original.scores.rows)):
        pairs = pair(twin.scores, original.scores, column, max_unpaired, None)
        checks.append(_equivalent(names.get(column, column), column, pairs.candidate, pairs.baseline, margin))
    return checks


def _equivalent(metric: str, column: str, twin: Sequence[float], original: Sequence[float], margin: float) -> Check:
    from . import stats

    binary = all(value in (0.0, 1.0) for value in (*twin, *original))
    interval: Any = (stats.paired_difference(twin, original, LEVEL, sides=2) if binary
                     else stats.paired_mean_difference(twin, original, LEVEL, sides=2))
    passed = -margin <= interval.low and interval.high <= margin
    past = abs(interval.estimate) >= margin  # no number of rows would bring it inside
    underpowered = not passed and not past and interval.high - interval.low > 2 * margin
    needed = (stats.paired_equivalence_rows(interval.better, interval.worse, interval.n, margin, LEVEL) if binary
              else stats.mean_equivalence_rows(interval.estimate, interval.se * math.sqrt(interval.n), margin, LEVEL))
    line = (f"{metric} ~= twin \u00b1 {margin:g} at {LEVEL:.0%}: difference {interval.estimate:+.2f} "
            f"[{interval.low:+.2f}, {interval.high:+.2f}] on {interval.n} rows")
    if underpowered:
        more = f"about {needed} rows would do at this spread" if needed else "more rows than can be counted"
        line += f"; underpowered: the interval is wider than \u00b1{margin:g} allows ({more})"
    elif past:
        line += f"; the difference itself is past \u00b1{margin:g}"
    elif not passed:
        line += f"; the interval reaches past \u00b1{margin:g}"
    record = {"metric": metric, "column": column, "original": statistics.fmean(original),
              "twin": statistics.fmean(twin), "difference": interval.estimate, "low": interval.low,
              "high": interval.high, "n": interval.n, "margin": margin, "method": interval.method,
              "underpowered": underpowered, "rows_needed": needed}
    return Check("equivalence", line, passed, True, record)


def errors(original: Version, twin: Version, pairs: Pairs) -> Check:
    """Rows that failed on each side; the twin failing a row the original passed (or a row it lacks) fails."""
    worse = [(mine, theirs) for mine, theirs in pairs if theirs.error is not None and mine.error is None]
    missing = len(original.rows) - len(pairs)
    failed = [sum(row.error is not None for row in version.rows) for version in (original, twin)]
    line = (f"errors: the original failed {failed[0]} of {len(original.rows)} rows, the twin {failed[1]} of "
            f"{len(twin.rows)}")
    if worse:
        line += (f"; the twin failed {_rows(len(worse))} the original passed: "
                 + ", ".join(f"{theirs.identity} ({_clip(theirs.error or '')})" for _, theirs in worse[:SHOWN_ROWS]))
    if missing:
        line += f"; the twin lacks {_rows(missing)} of the original's"
    record = {"original": failed[0], "twin": failed[1], "rows": len(original.rows), "missing": missing,
              "twin_only": [{"row": theirs.identity, "error": theirs.error} for _, theirs in worse[:SHOWN_ROWS]],
              "twin_only_count": len(worse)}
    return Check("errors", line, not worse and not missing, True, record)


def _rows(n: int) -> str:
    return f"{n} row{'s' * (n != 1)}"


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def spend(original: Version, twin: Version) -> Check:
    """Latency (p50 and p95 of rows answered live) and cost of both; reported, not gated."""
    figures = {label: {**_latency(version), "cost": sum(row.cost for row in version.rows)}
               for label, version in (("original", original), ("twin", twin))}
    parts = [f"{label} {_seconds(f['p50'])}/{_seconds(f['p95'])}" for label, f in figures.items()]
    costs = [f"{label} {f['cost']:.4f}" for label, f in figures.items()]
    line = f"latency p50/p95: {', '.join(parts)}; cost: {', '.join(costs)}"
    return Check("spend", line, True, False, figures)


def _latency(version: Version) -> dict[str, float | None]:
    from .engine import _percentile as nearest_rank  # the run's own latency.p95

    live = sorted(row.latency for row in version.rows if row.latency is not None and not row.cached)
    return {"p50": nearest_rank(live, 0.5) if live else None, "p95": nearest_rank(live, 0.95) if live else None}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"
