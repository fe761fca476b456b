"""The best configuration of a flow (its node variants and overrides): the highest mean primary
metric over the datasets (lowest for error, latency, cost and token metrics), among configurations
whose cells all passed and were scored on every dataset the metric was seen on; on a tie, the one
with the default variants. Means over different datasets would not compare, hence the last rule."""

from __future__ import annotations

import statistics
from typing import Any, Mapping, NamedTuple, Sequence

BUILT_IN_PREFIXES = ("latency.", "llm.", "tokens.", "cost.")
LOWER_IS_BETTER_PREFIXES = ("latency.", "cost.", "tokens.")


def built_in(metric: str) -> bool:
    """Every run has it: not an evaluator's metric."""
    return metric in ("error_rate", "rows") or metric.startswith(BUILT_IN_PREFIXES)


def lower_is_better(metric: str) -> bool:
    return metric == "error_rate" or metric.startswith(LOWER_IS_BETTER_PREFIXES)


def primary_metric(flow: str, cells: Sequence[Mapping[str, Any]], configured: Mapping[str, str]) -> str | None:
    """The configured metric for ``flow`` (or for every flow, ``*``), else the first metric an
    evaluator reported for it, else None."""
    if flow in configured or "*" in configured:
        return configured.get(flow) or configured["*"]
    for cell in cells:
        for name in cell["metrics"]:
            if not built_in(name) and "." not in name:
                return name
    return None


class Best(NamedTuple):
    """A flow's best configuration (None when there is none), why, and how it was selected (report.json's
    flow ``selection``)."""

    config: str | None
    reason: str
    selection: dict[str, Any] | None = None
    #: configuration -> the figure the choice reads (``selection.figures``, or the mean of its cells' values)
    figures: dict[str, dict[str, Any]] = {}


def best_configuration(cells: Sequence[Mapping[str, Any]], metric: str | None) -> Best:
    """The best configuration's label (``cell["config"]``) and why, or None and why there is none."""
    if metric is None:
        return Best(None, "no primary metric: set promptflow_primary_metrics")
    scored = [c for c in cells if metric in c["metrics"]]
    datasets = {c["dataset"] for c in scored}
    by_config: dict[str, list[Mapping[str, Any]]] = {}
    for cell in scored:
        by_config.setdefault(cell["config"], []).append(cell)
    failing = {c["config"] for c in cells if c["outcome"] != "passed"}  # scored or not: a cell that did not pass
    tested = {config: group for config, group in by_config.items() if {c["dataset"] for c in group} == datasets}
    candidates = {config: group for config, group in tested.items() if config not in failing}
    from .selection import fair_selection, figures  # numpy, only once a report is merged

    means = {config: statistics.fmean(c["metrics"][metric] for c in group) for config, group in tested.items()}
    found = figures(tested, metric) or {config: {"mean": mean, "n": None, "datasets": len(datasets), "ci_low": None,
                                                 "ci_high": None, "rows": None} for config, mean in means.items()}
    if not candidates:
        return Best(None, f"no configuration passed every test and has {metric} on every dataset", None, found)
    sign = -1 if lower_is_better(metric) else 1
    over = f" over {len(datasets)} datasets" if len(datasets) > 1 else ""
    fair = fair_selection(tested, failing, metric, sign, over)
    if fair is not None:
        return Best(fair.config, fair.reason, fair.selection, found)
    best = max(sorted(candidates), key=lambda config: (sign * means[config], candidates[config][0]["default"]))
    ties = [config for config in candidates if means[config] == means[best]]
    how = "lowest" if sign < 0 else "highest"
    tie = f"; default variants among {len(ties)} tied" if len(ties) > 1 and candidates[best][0]["default"] else ""
    return Best(best, f"{how} mean {metric} ({means[best]:.4g}){over} among {len(candidates)} passing "
                      f"configuration{'s' * (len(candidates) > 1)}{tie}",
                {"mode": "none", "rows": None, "candidates": len(candidates), "optimism": None, "tied_with": [],
                 "why": f"{metric} is not a mean of per-row scores, so no split, Holm or tie check"}, found)
