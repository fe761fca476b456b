"""The HTML report: one self-contained page (styles, script and SVG charts inline, no network
fetch) that a reviewer opens from a CI artifact. Per flow: the comparison table with threshold
verdicts, a bar chart per metric, the best configuration, and a drill-down into every cell's rows.

The page is rendered here from the report document; tables and charts need no script. The inline
script only filters failing rows and shows two cells side by side, from a JSON data island.
Every value from a model or a dataset goes through Jinja's autoescape or ``escape`` below.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..metric_names import aliases_of, shown_name
from ..scrub import write_text
from ..thresholds import threshold_text, verdict_word
from .best import built_in, lower_is_better
from .explain import best_score, configurations_view, figure_heading, variants_view

HTML = "report.html"
TEMPLATE = "report.html.j2"
#: built-in metrics come after the evaluators' ones, in this order; OPEN_BUILT_IN ones are charted
#: beside the evaluators' metrics, the other counters folded away
BUILT_IN_ORDER = ("error_rate", "latency.", "cost.", "tokens.", "rows", "llm.")
OPEN_BUILT_IN = ("error_rate", "latency.p95", "cost.total")
MISSING = "\u2014"
FIRST_AFTER_VERDICT = ("error_rate", "cost.total")  # the comparison table's columns right after the verdict
#: what the page embeds of a value and of a cell's rows, so that a big dataset still gives a page a browser
#: opens (50 MB of data made a 157 MB page); every value and every row stays whole in rows.csv and report.json
HTML_VALUE_CHARS = 1_000
HTML_ROWS_PER_CELL = 500
#: a transcript's message or answer longer than this shows its start, the rest folded away
FOLD_CHARS = 240
#: what the side-by-side view gets of a row's prompts to compare (all of its flow's LLM calls)
HTML_PROMPT_CHARS = 4 * HTML_VALUE_CHARS


def write_html(document: Mapping[str, Any], path: Path) -> None:
    """Write the page for ``document`` to ``path`` (``report.html`` in the report folder)."""
    write_text(path, render(document))


def render(document: Mapping[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("pytest_promptflow.reporting", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    style, script = (_resource(name) for name in ("report.css", "report.js"))
    flows = [_flow_view(i, flow) for i, flow in enumerate(document["flows"])]
    island = {"flows": [{"flow": f["name"], "cells": f["island"]} for f in flows]}
    return env.get_template(TEMPLATE).render(
        environment=document.get("environment", {}), flows=flows, data_island=_markup(json_island(island)),
        style=_markup(style), script=_markup(script), style_hash=_csp_hash(style), script_hash=_csp_hash(script))


def _resource(name: str) -> str:
    from importlib.resources import files

    return files("pytest_promptflow.reporting").joinpath("templates", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    """The page's Content-Security-Policy allows only its own style and script, by hash: even a
    ``<script>`` that slipped past escaping would not run, and nothing may be fetched."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def json_island(data: Any) -> str:
    """``data`` as JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    survives, so a ``</script>`` in a model's answer cannot end the element."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


# --- the view of one flow ------------------------------------------------------------------------


def metric_columns(flow: Mapping[str, Any]) -> list[str]:
    """Every metric of the flow's cells in a stable order: the primary metric, the evaluators'
    metrics (plain names before ``evaluator.name``), then the built-in ones."""
    aliases = flow.get("metric_aliases") or {}
    names = {name for cell in flow["cells"] for name in cell["metrics"] if name not in aliases}
    primary = shown_name(flow.get("primary_metric") or "", aliases)

    def rank(name: str) -> tuple[int, int, str]:
        if name == primary:
            return (0, 0, name)
        if not built_in(name):
            return (1, "." in name, name)
        return (2, next(i for i, prefix in enumerate(BUILT_IN_ORDER) if name.startswith(prefix)), name)

    return sorted(names, key=rank)


def table_columns(columns: Sequence[str], primary: str) -> list[str]:
    """The comparison table's metric columns: the primary metric (the verdict follows it), the error rate and the
    cost, then the others in ``metric_columns``' order: what decides a cell is seen without scrolling."""
    first = [name for name in (primary, *FIRST_AFTER_VERDICT) if name in columns]
    return [*first, *(name for name in columns if name not in first)]


def _flow_view(index: int, flow: Mapping[str, Any]) -> dict[str, Any]:
    columns = metric_columns(flow)
    aliases = flow.get("metric_aliases") or {}
    table = table_columns(columns, shown_name(flow.get("primary_metric") or "", aliases))
    cells = [_cell_view(flow, cell, table) for cell in flow["cells"]]
    open_charts: list[dict[str, Any]] = []
    more_charts: list[dict[str, Any]] = []
    for names in _chart_groups(flow["cells"], columns, aliases):
        chart = bar_chart(names, cells, [_thresholds(cell, names) for cell in flow["cells"]])
        (more_charts if built_in(names[0]) and names[0] not in OPEN_BUILT_IN else open_charts).append(chart)
    datasets = [c["dataset"] for c in flow["cells"]]
    configurations = configurations_view(flow)
    return {
        "index": index, "name": flow["flow"], "anchor": f"flow-{index}",
        "best": flow.get("best"), "best_reason": flow.get("best_reason", ""),
        "variants": variants_view(flow.get("variants") or {}),
        "best_score": best_score(flow), "configurations": configurations, "figure_heading": figure_heading(flow),
        "figure_chart": _figure_chart(flow, configurations),
        "columns": [{"name": name, "lower": lower_is_better(name), "aliases": aliases_of(name, aliases)}
                    for name in table],
        "lead": int(bool(table) and table[0] == shown_name(flow.get("primary_metric") or "", aliases)),
        "aliases": [(name, aliases_of(name, aliases)) for name in columns if aliases_of(name, aliases)],
        "cells": cells, "charts": open_charts, "more_charts": more_charts,
        "parities": [_parity_view(cell) for cell in flow["cells"] if cell.get("parity")],
        "failed_cells": sum(cell["outcome"] in ("failed", "error") for cell in flow["cells"]),
        "comparable": any(datasets.count(d) > 1 for d in datasets), "pair": _pair(flow),
        "island": [{"cell": c["id"], "label": c["label"], "dataset": c["dataset"], "rows": c["island_rows"]}
                   for c in cells],
    }


def _figure_chart(flow: Mapping[str, Any], configurations: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The figure each configuration was ranked on, as a bar with its interval: the chart of why the best won."""
    metric = flow.get("primary_metric")
    if metric is None or not any(c["figure"] for c in configurations):
        return None
    bars = [{"config": c["config"], "dataset": "all datasets", "label": c["config"], "best": c["best"],
             "failed_thresholds": [f"{metric} did not pass"] if c["failing"] else [],
             "metrics": {metric: c["figure"]["mean"]} if c["figure"] else {},
             "intervals": {f"{metric}.{key}": c["figure"][key] for key in ("ci_low", "ci_high", "n")}
             if c["figure"] else {}}
            for c in configurations]
    return {**bar_chart([metric], bars, [[] for _ in bars]), "names": [figure_heading(flow)]}


def _parity_view(cell: Mapping[str, Any]) -> dict[str, Any]:
    """A cell's parity with its twin: a line per check marked pass, fail or reported (not gated), and the line
    diff of the first differing request."""
    parity = cell["parity"]
    checks = [parity["request"], parity["outputs"], *parity["equivalence"], parity["errors"], parity["spend"]]
    first = parity["request"].get("first") or {}
    return {"cell": cell["cell"], "original": parity["original"], "twin": parity["twin"], "passed": parity["passed"],
            "checks": [(check["line"], _status(check)) for check in checks],
            "diff": first.get("diff") or [], "row": first.get("row"), "call": first.get("call")}


def _status(check: Mapping[str, Any]) -> str:
    """``reported`` for a check that does not gate (outputs, latency, cost), else ``pass`` or ``fail``."""
    if not check.get("gated", True):
        return "reported"
    return "pass" if check["passed"] else "fail"


def _pair(flow: Mapping[str, Any]) -> tuple[int, int]:
    """The two cells the side-by-side view starts with: the best configuration's (else the first)
    cell that shares its dataset with another cell, and the first other cell on that dataset,
    preferring one scored on the primary metric."""
    cells = flow["cells"]
    shared = [i for i, cell in enumerate(cells) if sum(c["dataset"] == cell["dataset"] for c in cells) > 1]
    if not shared:
        return (0, 0)
    first = next((i for i in shared if cells[i]["config"] == flow.get("best")), shared[0])
    others = [i for i in shared if i != first and cells[i]["dataset"] == cells[first]["dataset"]]
    scored = [i for i in others if flow.get("primary_metric") in cells[i]["metrics"]]
    return (first, (scored or others)[0])


def _cell_view(flow: Mapping[str, Any], cell: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    aliases = flow.get("metric_aliases") or {}
    verdicts = _verdicts(cell)
    values = []
    for name in columns:
        value = cell["metrics"].get(name)
        mine = [v for v in verdicts if shown_name(v["metric"], aliases) == name]
        values.append({"text": MISSING if value is None else number(value),
                       "interval": interval_text(_interval(cell, name)),
                       "failed": [_threshold(v) for v in mine if not v["passed"]],
                       "passed": [_threshold(v) for v in mine if v["passed"]]})
    failing = [i for i, row in enumerate(cell["rows"]) if _row_failing(row)]
    kept = shown_rows(cell["rows"], failing)
    rows = [_row_view(row) for row in kept]
    config = cell["config"]
    return {
        "id": cell["cell"], "config": config, "best": config == flow.get("best"),
        "label": f"{config} \u00b7 {cell['dataset']}",
        "variants": [f"{node}={variant}" for node, variant in cell["variants"].items()],
        "overrides": [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in cell["overrides"].items()],
        "short_overrides": [f"{key.rsplit('.', 1)[-1]}={json.dumps(value, ensure_ascii=False)}"
                            for key, value in cell["overrides"].items()],
        "dataset": cell["dataset"], "dataset_path": cell.get("dataset_path", ""),
        "dataset_hash": cell.get("dataset_hash", "")[:12],
        "outcome": cell["outcome"],
        "history": [note for note in (cell.get("kept"), cell.get("stale")) if note],  # reporting/history.py
        "failed_thresholds": list(dict.fromkeys(f"{v['metric']} {_threshold(v)}" for v in verdicts if not v["passed"])),
        "nodeids": [item["nodeid"] for item in cell["items"]],
        "values": values, "rows": rows, "rows_total": len(cell["rows"]),
        "failing_rows": len(failing), "rows_note": rows_note(len(cell["rows"]), len(failing)),
        "metrics": cell["metrics"], "intervals": cell.get("intervals", {}),
        "island_rows": [{"index": row["index"], "data": _shown_values(row["data"]),
                         "outputs": _shown_values(row["outputs"]), "error": _shown_values(row["error"]),
                         "scores": _shown_values(row["scores"]), "failing": _row_failing(row),
                         "prompt": shown(prompt_text(row.get("calls", [])), HTML_PROMPT_CHARS, "report.json")}
                        for row in kept],
    }


def shown_rows(rows: Sequence[Mapping[str, Any]], failing: Sequence[int]) -> list[Mapping[str, Any]]:
    """The rows the page shows of a cell, at most HTML_ROWS_PER_CELL, in the cell's order: its failing rows
    (``failing``: their positions) first, then its first other rows; so a page stays the same size at 100,000
    rows and still shows what went wrong."""
    if len(rows) <= HTML_ROWS_PER_CELL:
        return list(rows)
    chosen = set(failing[:HTML_ROWS_PER_CELL])
    chosen.update(itertools.islice((i for i in range(len(rows)) if i not in chosen),
                                   HTML_ROWS_PER_CELL - len(chosen)))
    return [rows[i] for i in sorted(chosen)]


def rows_note(total: int, failing: int = 0) -> str:
    """What the page says of a cell whose rows it does not all show ("" when it shows them all)."""
    if total <= HTML_ROWS_PER_CELL:
        return ""
    hidden = f"{total - HTML_ROWS_PER_CELL:,} rows are not shown; every row is in rows.csv (the metrics are over " \
             "all of them)."
    if not failing:
        return f"The page shows the first {HTML_ROWS_PER_CELL:,} of {total:,} rows; {hidden}"
    if failing >= HTML_ROWS_PER_CELL:
        return (f"The page shows the first {HTML_ROWS_PER_CELL:,} of the {failing:,} failing rows of {total:,}; "
                f"{hidden}")
    return (f"The page shows {HTML_ROWS_PER_CELL:,} of {total:,} rows: all {failing:,} failing ones, then the first "
            f"others; {hidden}")


def shown(text: str, limit: int = HTML_VALUE_CHARS, whole_in: str = "rows.csv") -> str:
    """``text`` as the page embeds it: whole, or its first ``limit`` characters and a note."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\u2026 [cut: {len(text):,} characters in all; the full value is in {whole_in}]"


def _shown_values(values: Any) -> Any:
    """A row's data, outputs, error or scores for the data island, each long value ``shown`` as text."""
    if isinstance(values, Mapping):
        return {key: _shown_values(value) for key, value in values.items()}
    if isinstance(values, str):
        return shown(values)
    if isinstance(values, list):
        text = json.dumps(values, ensure_ascii=False)
        return values if len(text) <= HTML_VALUE_CHARS else shown(text)
    return values


def _row_view(row: Mapping[str, Any]) -> dict[str, Any]:
    latency = row.get("latency")
    return {
        "index": row["index"], "data": _pairs(row["data"]), "inputs": _pairs(row["inputs"]),
        "outputs": MISSING if row["outputs"] is None else _pairs(row["outputs"]),
        "error": shown(row["error"] or ""),
        "scores": [(name, _text(value), _failing_score(value)) for name, value in row["scores"].items()],
        "latency": _seconds(latency),
        "cached": "yes" if row.get("cached") else "no",
        "failing": _row_failing(row),
        "calls": [_call_view(call) for call in row.get("calls", [])],
    }


def _call_view(call: Mapping[str, Any]) -> dict[str, Any]:
    """One LLM call of a row's transcript, as its drill-down shows it."""
    source = (f"evaluator {call['evaluator']}" if call.get("evaluator") else
              f"node {call['node']}" if call.get("node") else "flow")
    return {
        "source": source, "kind": call["kind"], "model": call["model"],
        "parameters": [(key, _text(value)) for key, value in call["parameters"].items()],
        "messages": [(message["role"], _folded(message["content"])) for message in call["messages"]],
        "answer": _folded(call["answer"]), "error": shown(call["error"] or "", whole_in="report.json"),
        "finish_reason": call["finish_reason"] or MISSING, "truncated": call["truncated"],
        "tokens": f"{call['prompt_tokens']} + {call['completion_tokens']}", "cost": number(call["cost"]),
        "latency": _seconds(call["latency"]), "from_store": call["from_store"],
    }


def _seconds(latency: float | None) -> str:
    return MISSING if latency is None else (f"{latency * 1000:.1f} ms" if latency < 1 else f"{latency:.2f} s")


def _folded(text: str) -> dict[str, Any]:
    """A transcript's text: its first FOLD_CHARS characters, and the whole (up to HTML_VALUE_CHARS) when longer."""
    if len(text) <= FOLD_CHARS:
        return {"head": text, "whole": None}
    return {"head": text[:FOLD_CHARS], "whole": shown(text, whole_in="report.json"), "chars": f"{len(text):,}"}


def prompt_text(calls: Sequence[Mapping[str, Any]]) -> str:
    """A row's prompts as one text to compare between cells: each of its flow's LLM calls' messages, one
    ``role: content`` block each (headed by the call's node when there are several)."""
    mine = [call for call in calls if not call.get("evaluator")]
    blocks = ["\n".join(f"{m['role']}: {m['content']}" for m in call["messages"]) for call in mine]
    if len(blocks) == 1:
        return blocks[0]
    return "\n\n".join(f"[{call.get('node') or call['kind']}]\n{block}" for call, block in zip(mine, blocks,
                                                                                               strict=True))


def _row_failing(row: Mapping[str, Any]) -> bool:
    """A row that raised, or that an evaluator scored 0 or False."""
    return bool(row["error"]) or any(_failing_score(value) for value in row["scores"].values())


def _failing_score(value: Any) -> bool:
    return value is False or (type(value) in (int, float) and value == 0)


def _pairs(values: Any) -> list[tuple[str, str]]:
    if isinstance(values, Mapping):
        return [(str(key), _text(value)) for key, value in values.items()]
    return [("", _text(values))]


def number(value: float) -> str:
    """A metric for reading: whole numbers in full (token counts), others to 4 significant digits."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return number(value)
    return shown(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def _interval(cell: Mapping[str, Any], metric: str) -> tuple[float, float, int] | None:
    """A metric's 95% interval from the cell's ``intervals`` (low, high, n); None when it has none, or no
    finite bounds (one row)."""
    intervals = cell.get("intervals", {})
    low, high = intervals.get(f"{metric}.ci_low"), intervals.get(f"{metric}.ci_high")
    if low is None or high is None:
        return None
    return float(low), float(high), int(intervals.get(f"{metric}.n") or 0)


def interval_text(interval: tuple[float, float, int] | None) -> str:
    """``95% interval 0.52 to 0.85 (n 40)``: what a tooltip says of a metric's interval."""
    if interval is None:
        return ""
    low, high, n = interval
    return f"95% interval {low:.4g} to {high:.4g} (n {n})"


def _verdicts(cell: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The cell's verdicts, one per metric, operator, threshold and result (items may repeat them)."""
    seen = {(v["metric"], v["op"], v["threshold"], v.get("level"), v["passed"]): v for v in cell["verdicts"]}
    return list(seen.values())


def _threshold(verdict: Mapping[str, Any]) -> str:
    """``>= 0.8 at 95%``; a baseline comparison that could not see min_effect adds ``(underpowered: ...)``."""
    note = verdict_word(verdict).partition(" ")[2]  # "(underpowered: MDE 0.08 > 0.05)" or nothing
    return f"{threshold_text(verdict)} {note}".rstrip()


def _thresholds(cell: Mapping[str, Any], metrics: Sequence[str]) -> list[float]:
    """The thresholds a cell's bar of a metric's chart draws, from experiment.yaml, ``expect`` and marker tests'
    asserts alike: a baseline threshold's limit is on the difference, not the metric."""
    return sorted({float(v["threshold"]) for v in cell["verdicts"]
                   if v["metric"] in metrics and v.get("baseline") is None})


def _chart_groups(cells: Sequence[Mapping[str, Any]], columns: Sequence[str],
                  aliases: Mapping[str, str]) -> list[list[str]]:
    """One chart per metric with its aliases after it; without aliases (an older document), ``evaluator.name``
    joins ``name``'s chart when its values are the same in every cell."""
    groups = _twins(cells, columns)
    return [[*group, *(alias for name in group for alias in aliases_of(name, aliases))] for group in groups]


def _twins(cells: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for name in columns:
        series = [cell["metrics"].get(name) for cell in cells]
        twin = next((g for g in groups if g[0].rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]
                     and not built_in(name)
                     and [cell["metrics"].get(g[0]) for cell in cells] == series), None)
        if twin is not None:
            twin.append(name)
        else:
            groups.append([name])
    return groups


# --- charts --------------------------------------------------------------------------------------

BAR_HEIGHT, GAP, CHAR_WIDTH, LABEL_CHARS, BAR_AREA, VALUE_AREA = 14, 6, 6.2, 56, 220, 64


def bar_chart(names: Sequence[str], cells: Sequence[Mapping[str, Any]],
              cell_thresholds: Sequence[Sequence[float]]) -> dict[str, Any]:
    """A horizontal bar per cell for the metric ``names[0]`` (``names[1:]`` have the same values),
    as inline SVG: the best configuration's bars marked, failing cells red, thresholds dashed: across the
    chart when every bar has it, else across the bars that have it (a threshold per dataset)."""
    metric = names[0]
    thresholds = sorted({t for mine in cell_thresholds for t in mine})
    valued = [mine for mine, cell in zip(cell_thresholds, cells, strict=True)
              if cell["metrics"].get(metric) is not None]
    common = [t for t in thresholds if all(t in mine for mine in valued)]
    values = [cell["metrics"].get(metric) for cell in cells]
    intervals = [_interval(cell, metric) if value is not None else None for cell, value in zip(cells, values,
                                                                                                 strict=True)]
    present = [v for v in values if v is not None] + [b for i in intervals if i for b in i[:2]]
    low = min([0.0, *present, *thresholds])
    high = max([0.0, *present, *thresholds])
    span = (high - low) or 1.0
    labels = [_clip(cell["config"], cell["dataset"]) for cell in cells]
    label_width = round(max(len(label) for label in labels) * CHAR_WIDTH) + 8 if labels else 0
    width = label_width + BAR_AREA + VALUE_AREA
    height = len(cells) * (BAR_HEIGHT + GAP) + GAP + 12

    def x(value: float) -> float:
        return round(label_width + (value - low) / span * BAR_AREA, 1)

    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(metric)} per cell">']
    for i, (cell, label, value, interval) in enumerate(zip(cells, labels, values, intervals, strict=True)):
        y = GAP + i * (BAR_HEIGHT + GAP)
        middle = y + BAR_HEIGHT / 2 + 4
        kind = "fail" if _fails(cell, names) else "best" if cell["best"] else "bar"
        spread = f"; {interval_text(interval)}" if interval else ""
        parts.append(f'<g class="{kind}"><title>{escape(cell["label"])}: '
                     f'{MISSING if value is None else f"{value:.6g}"}{spread}</title>')
        parts.append(f'<text x="{label_width - 6}" y="{middle}" text-anchor="end">{escape(label)}</text>')
        if value is None:
            parts.append(f'<text x="{x(0) + 4}" y="{middle}" class="value">no value</text></g>')
            continue
        left, right = sorted((x(0), x(value)))
        parts.append(f'<rect x="{left}" y="{y}" width="{max(right - left, 1)}" height="{BAR_HEIGHT}"/>')
        if interval:
            parts.append(_error_bar(x(interval[0]), x(interval[1]), y + BAR_HEIGHT / 2))
            right = max(right, x(interval[1]))
        parts.append(f'<text x="{max(right, x(0)) + 4}" y="{middle}" class="value">{number(value)}</text></g>')
        parts += [_tick(x(t), y, t) for t in cell_thresholds[i] if t not in common]
    for threshold in common:
        parts.append(f'<line class="threshold" x1="{x(threshold)}" x2="{x(threshold)}" y1="0" y2="{height - 12}">'
                     f'<title>threshold {threshold:g}</title></line>'
                     f'<text class="threshold" x="{x(threshold)}" y="{height - 2}" text-anchor="middle">'
                     f'{threshold:g}</text>')
    parts.append("</svg>")
    return {"names": list(names), "lower": lower_is_better(metric), "svg": _markup("".join(parts))}


def _tick(at: float, top: float, threshold: float) -> str:
    """A threshold of one bar: a dashed line across it."""
    return (f'<line class="threshold" x1="{at}" x2="{at}" y1="{top - 2}" y2="{top + BAR_HEIGHT + 2}">'
            f'<title>threshold {threshold:g}</title></line>')


def _error_bar(left: float, right: float, middle: float) -> str:
    """The 95% interval across a bar: a line with a whisker at each bound."""
    top, bottom = middle - BAR_HEIGHT / 4, middle + BAR_HEIGHT / 4
    return (f'<path class="interval" d="M{left} {middle}H{right}M{left} {top}V{bottom}M{right} {top}V{bottom}"/>')


def _fails(cell: Mapping[str, Any], metrics: Sequence[str]) -> bool:
    return any(text.split(" ", 1)[0] in metrics for text in cell["failed_thresholds"])


def _clip(config: str, dataset: str) -> str:
    """A chart label of at most LABEL_CHARS: the configuration is cut short, never the dataset."""
    room = max(LABEL_CHARS - len(dataset) - 3, 8)
    return f"{config if len(config) <= room else config[: room - 1] + chr(0x2026)} \u00b7 {dataset}"


def _markup(text: str) -> Any:
    from markupsafe import Markup

    return Markup(text)
