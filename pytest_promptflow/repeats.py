"""A cell whose rows ran K times (``--promptflow-repeat K``): the metrics of its 0/1 scores over the repeats
(``<m>.pass@k``, ``<m>.pass^k``, ``<m>.flaky_rate``, k = K), its flaky rows, and the row each value belongs
to, so that intervals count rows, never row x repeat."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from .engine import Run
from .evaluation import Evaluation
from .reporting.best import lower_is_better


def repeat_metrics(run: Run, name: str, values: Sequence[float],
                   value_rows: Sequence[int]) -> dict[str, tuple[float, tuple[float, ...]]]:
    """``<name>.pass@k``, ``.pass^k`` and ``.flaky_rate``, each with its per-row values, of a 0/1 metric of a
    repeated run; a lower-is-better one (``error_rate``) has only its flaky rate. Unbiased from c successes of K
    (not (c/K)^k); a row lacking a repeat's value (the evaluator failed on it) is left out."""
    if run.repeats == 1 or not _zero_one(values):
        return {}
    from . import stats

    successes = [sum(row) for row in _by_row(run, values, value_rows).values()]
    if not successes:
        return {}
    k = run.repeats
    per_row = {f"{name}.flaky_rate": stats.flaky_rows(successes, k).astype(float)}
    if not lower_is_better(name):
        per_row[f"{name}.pass@k"] = stats.pass_at_k(successes, k, k)
        per_row[f"{name}.pass^k"] = stats.pass_hat_k(successes, k, k)
    return {key: (float(row_values.mean()), tuple(float(v) for v in row_values)) for key, row_values in per_row.items()}


def flaky(run: Run, evaluations: Sequence[Evaluation]) -> list[dict[str, Any]]:
    """Rows whose repeats disagree on a 0/1 metric (some pass, some fail; for ``error_rate`` some fail): the
    row's identity and index, the metric (``<evaluator>.<metric>``), and each repeat's value and outputs."""
    if run.repeats == 1:
        return []
    sources: list[tuple[str, Sequence[float], Sequence[int]]] = [
        ("error_rate", run.metric_values["error_rate"], range(len(run.rows)))]
    sources += [(f"{ev.evaluator}.{name}", values, ev.value_rows(name))
                for ev in evaluations for name, values in ev.values.items()]
    found = []
    for metric, values, value_rows in sources:
        if not _zero_one(values):
            continue
        positions = _by_row(run, range(len(value_rows)), value_rows)
        for index, at in positions.items():
            repeat_values = [values[p] for p in at]
            if 0 < sum(repeat_values) < len(repeat_values):
                rows = [run.rows[value_rows[p]] for p in at]
                found.append({"id": rows[0].identity, "index": index, "metric": metric, "values": repeat_values,
                              "outputs": [None if row.outputs is None else dict(row.outputs) for row in rows]})
    return found


def _by_row(run: Run, items: Iterable[Any], value_rows: Sequence[int]) -> dict[int, list[Any]]:
    """``items`` (one per value) grouped by dataset row, in repeat order; only rows with all K repeats."""
    grouped: dict[int, list[Any]] = {}
    for item, at in zip(items, value_rows, strict=True):
        grouped.setdefault(run.rows[at].index, []).append(item)
    return {index: group for index, group in grouped.items() if len(group) == run.repeats}


def _zero_one(values: Sequence[float]) -> bool:
    return bool(values) and all(value in (0.0, 1.0) for value in values)
