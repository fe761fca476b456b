"""One name per metric. A number reaches the metrics under several names, and every one of them still
works in ``metrics[...]``, thresholds and the release; the reports show one and list the others as aliases:

- ``<evaluator>.<name>`` beside the short ``name`` its first evaluator owns (``sentiment_eval.accuracy``);
- a per-row column whose mean the evaluation flow's aggregation logged (``score`` under ``accuracy``:
  ``evaluation.mean_columns``), with its ``<evaluator>.`` spelling;
- azure-ai-evaluation's ``<x>_score``, which its evaluators return beside the legacy ``<x>`` with the
  same value on every row (``F1ScoreEvaluator``: ``f1_score`` and ``f1_score_score``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

SCORE_SUFFIX = "_score"


def within_evaluator(evaluation: Any) -> dict[str, str]:
    """An evaluator's metric name -> the name of its that says the same number (kept: the logged metric, the
    shorter ``<x>``)."""
    found: dict[str, str] = {}
    for metric, column in evaluation.aliases.items():
        if column != metric and column in evaluation.metrics:
            found[column] = metric
    values = evaluation.values
    for name in evaluation.metrics:
        base = name.removesuffix(SCORE_SUFFIX)
        if (base != name and base in values and values.get(name) == values[base]
                and evaluation.value_rows(name) == evaluation.value_rows(base)):
            found[name] = found.get(base, base)
    return found


def run_aliases(evaluations: Sequence[Any], owners: Mapping[str, str]) -> dict[str, str]:
    """Every alias among a run's metric names -> the name the reports show. ``owners``: short name -> the
    evaluator whose metric it is (``metrics_of`` gives a short name to the first evaluator that reports it)."""
    aliases: dict[str, str] = {}
    for evaluation in evaluations:
        evaluator = evaluation.evaluator
        inner = within_evaluator(evaluation)

        def key(name: str) -> str:
            return name if owners.get(name) == evaluator else f"{evaluator}.{name}"  # noqa: B023

        for name in evaluation.metrics:
            kept = key(inner.get(name, name))
            for spelling in (key(name), f"{evaluator}.{name}"):
                if spelling != kept:
                    aliases[spelling] = kept
    return aliases


def derived_aliases(aliases: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """``aliases`` and the names derived from an alias (``score.pass@k`` of a repeated run) whose kept name's
    derivative exists too."""
    names = set(names)
    derived = dict(aliases)
    for name in names:
        for alias, kept in aliases.items():
            if name.startswith(f"{alias}.") and f"{kept}{name[len(alias):]}" in names:
                derived[name] = f"{kept}{name[len(alias):]}"
    return derived


def flow_aliases(cells: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The aliases that hold in every cell of a flow that has the name: alias -> the name shown."""
    seen: dict[str, set[str]] = {}
    for cell in cells:
        aliases = cell.get("aliases") or {}
        for name in cell["metrics"]:
            seen.setdefault(name, set()).add(aliases.get(name, ""))  # "": not an alias in this cell
    return {name: kept.pop() for name, kept in seen.items() if len(kept) == 1 and "" not in kept}


def shown_name(name: str, aliases: Mapping[str, str]) -> str:
    """The name the reports show for ``name`` (itself unless it is an alias)."""
    return aliases.get(name, name)


def aliases_of(name: str, aliases: Mapping[str, str]) -> list[str]:
    """The other names of the metric the reports show as ``name``."""
    return sorted(alias for alias, kept in aliases.items() if kept == name)
