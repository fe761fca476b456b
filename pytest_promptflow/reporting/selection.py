"""A fair choice among a flow's configurations: the best of N picked on the rows that also score it reads
high (at 400 rows and a true 0.70 everywhere, +0.024 for N=4), and gating each at 5% lets a failing one
through far more often than 5%.

With every dataset at ``SPLIT_ROWS`` rows or more, rows split by identity: the selection half picks, the
confirmation half gives the winner's numbers and re-checks its thresholds. With fewer rows, each
configuration's thresholds with a level are Holm-adjusted over the N configurations. When the best and the
runner-up are within noise, the default variants win, then the cheaper configuration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from ..aggregation import is_number
from ..thresholds import OPERATORS, threshold_text

SPLIT_ROWS = 200
TIE_LEVEL = 0.95  # two-sided paired interval of best - runner-up: holding 0 is a statistical tie
OPTIMISM_RESAMPLES = 1000
# cheaper first, in this order. Not latency.mean: on a few live rows it is noise, and it flipped the choice
# between two equally good configurations from one run to the next (tests/test_tracking.py)
SPEND = ("cost.total", "tokens.total")

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Check:
    """A threshold a configuration passed, with the per-row values it rests on (None: not a mean of rows)."""

    verdict: Mapping[str, Any]  # metric, op, threshold, level (None for a point threshold)
    values: Array | None
    selection: npt.NDArray[np.bool_] | None = None  # which of those rows are in the selection half


@dataclass(frozen=True)
class Candidate:
    """One configuration: its primary metric's per-row values on the rows every configuration has."""

    config: str
    values: Array
    passed: bool = True  # every cell passed its tests and has the metric
    default: bool = False
    spend: tuple[float, ...] = (0.0, 0.0)
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Choice:
    config: str | None
    reason: str
    selection: dict[str, Any] = field(default_factory=dict)


def in_selection_half(identity: str) -> bool:
    """The selection half: rows whose identity hashes even. The same rows on every machine and run."""
    return hashlib.sha256(identity.encode("utf-8")).digest()[-1] % 2 == 0


def row_values(cell: Mapping[str, Any], metric: str) -> dict[str, float] | None:
    """Each row's value of ``metric`` by row identity, as the metric's mean reads it; None when the metric is
    not a mean of per-row scores (``latency.p95``, a ``log_metric`` that is no column's mean). Failed flow rows
    already carry the worst scores; a row its evaluator gave no value is left out, as the metric's mean leaves
    it out (and a paired comparison counts it unpaired), so the choice reads the numbers the table shows."""
    rows = cell.get("rows") or []
    if metric == "error_rate" and rows:
        return {_identity(row): float(row["error"] is not None) for row in rows}
    direct = _column(rows, metric)
    if direct is not None:
        return direct
    column = _logged_mean_of(cell, metric)
    return None if column is None else _column(rows, column)


def _column(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, float] | None:
    found = {_identity(row): _score(row["scores"], metric) for row in rows}
    values = {identity: value for identity, value in found.items() if value is not None}
    return values or None


def _logged_mean_of(cell: Mapping[str, Any], metric: str) -> str | None:
    """The per-row score column whose mean an aggregation node logged as ``metric`` (an evaluation flow's
    ``accuracy`` over its per-row ``score``), by ``evaluation.mean_columns``' rule; None when no column, or more
    than one, is."""
    from ..evaluation import mean_columns

    value = cell["metrics"].get(metric)
    evaluators = {key[: -len(metric) - 1] for key in cell["metrics"] if key.endswith(f".{metric}")}
    if value is None or not evaluators:
        return None
    keys = sorted({key for row in cell["rows"] for key in row["scores"] if key.partition(".")[0] in evaluators})
    columns = {key: list(found.values()) for key in keys if (found := _column(cell["rows"], key))}
    return mean_columns({metric: value}, columns).get(metric)


def _identity(row: Mapping[str, Any]) -> str:
    return str(row.get("id") or row["index"])


def _score(scores: Mapping[str, Any], metric: str) -> float | None:
    """``metric`` (``name`` or ``evaluator.name``) in a row's ``evaluator.name`` scores; a pass/fail
    ``<x>_result`` is ``<x>_pass_rate``'s 1 or 0, as ``evaluation.score_columns`` reads it."""
    for key, value in scores.items():
        evaluator, _, name = key.partition(".")
        if name.endswith("_result") and str(value).lower() in ("pass", "fail"):
            name, value = name.removesuffix("_result") + "_pass_rate", float(str(value).lower() == "pass")
        if metric in (name, f"{evaluator}.{name}") and is_number(value):
            return float(value)
    return None


def fair_selection(tested: Mapping[str, Sequence[Mapping[str, Any]]], failing: AbstractSet[str], metric: str,
                   sign: int, over: str = "") -> Choice | None:
    """``fair_choice`` over report.json cells: ``tested`` maps each configuration scored on every dataset to
    its cells, ``failing`` names those with a cell that did not pass. None when ``metric`` has no per-row
    values in some cell (the caller falls back to means)."""
    aligned = _aligned(tested, metric)
    if aligned is None:
        return None
    common, values = aligned
    selection = _selection_rows(tested, common)
    candidates = [Candidate(config, values[config], config not in failing, bool(group[0]["default"]), _spend(group),
                            _checks(group))
                  for config, group in sorted(tested.items())]
    flow = str(next(iter(tested.values()))[0]["flow"])  # seeds the bootstrap: the same optimism on every rerun
    return fair_choice(candidates, selection, sign, f"{metric}{over}", seed=flow)


def _aligned(tested: Mapping[str, Sequence[Mapping[str, Any]]],
             metric: str) -> tuple[list[tuple[str, str]], dict[str, Array]] | None:
    """The (dataset, row identity) pairs every configuration has, and each configuration's values on them; None
    when ``metric`` has no per-row values in some cell, or no row is common."""
    per_config: dict[str, dict[tuple[str, str], float]] = {}
    for config, group in tested.items():
        merged: dict[tuple[str, str], float] = {}
        for cell in group:
            found = row_values(cell, metric)
            if found is None:
                return None
            merged.update(((cell["dataset"], identity), value) for identity, value in found.items())
        per_config[config] = merged
    common = sorted(set.intersection(*(set(values) for values in per_config.values()))) if per_config else []
    if not common:
        return None
    return common, {config: np.array([merged[key] for key in common]) for config, merged in per_config.items()}


def _selection_rows(tested: Mapping[str, Sequence[Mapping[str, Any]]],
                    common: Sequence[tuple[str, str]]) -> npt.NDArray[np.bool_] | None:
    """The selection half of the common rows when every dataset has SPLIT_ROWS rows or more, else None (Holm)."""
    # one configuration is no selection: halving its rows would only widen its gate
    split = len(tested) > 1 and all(len(cell["rows"]) >= SPLIT_ROWS for group in tested.values() for cell in group)
    return np.array([in_selection_half(identity) for _, identity in common]) if split else None


def figures(tested: Mapping[str, Sequence[Mapping[str, Any]]], metric: str) -> dict[str, dict[str, Any]] | None:
    """The figure the choice rests on, per configuration: its mean of ``metric`` over the rows it is ranked on
    (every dataset's rows pooled; the selection half when rows split) with the 95% two-sided interval of that
    mean. None when ``metric`` is not a mean of per-row values (the caller ranks by the cells' means)."""
    aligned = _aligned(tested, metric)
    if aligned is None:
        return None
    common, values = aligned
    selection = _selection_rows(tested, common)
    rows = np.ones(len(common), dtype=bool) if selection is None else selection
    datasets = len({dataset for dataset, _ in common})
    found = {}
    for config, mine in values.items():
        picked = mine[rows]
        interval = _interval(picked, 0.95, sides=2) if len(picked) > 1 else None
        found[config] = {"mean": float(picked.mean()), "n": int(len(picked)), "datasets": datasets,
                         "ci_low": None if interval is None else float(interval.low),
                         "ci_high": None if interval is None else float(interval.high),
                         "rows": "all" if selection is None else "selection half"}
    return found


def _spend(cells: Sequence[Mapping[str, Any]]) -> tuple[float, ...]:
    return tuple(sum(float(cell["metrics"].get(name, 0.0)) for cell in cells) for name in SPEND)


def _checks(cells: Sequence[Mapping[str, Any]]) -> tuple[Check, ...]:
    """The thresholds a configuration's cells were gated on, each with its per-row values; a comparison with a
    baseline keeps its own paired verdict (its limit is on a difference, not on the metric)."""
    checks = []
    for cell in cells:
        for verdict in cell["verdicts"]:
            found = None if verdict.get("baseline") else row_values(cell, verdict["metric"])
            values = None if found is None else np.array(list(found.values()))
            mask = None if found is None else np.array([in_selection_half(identity) for identity in found])
            checks.append(Check(verdict, values, mask))
    return tuple(checks)


def fair_choice(candidates: Sequence[Candidate], selection: npt.NDArray[np.bool_] | None, sign: int,
                metric: str, seed: str = "") -> Choice:
    """The configuration to release among ``candidates`` (all the configurations tested, aligned rows).

    ``selection``: the selection half's rows (split mode), or None for Holm mode. ``sign``: 1 when higher
    ``metric`` is better, -1 when lower is."""
    if selection is not None:
        return _split(candidates, selection, sign, metric)
    return _holm(candidates, sign, metric, seed)


def _split(candidates: Sequence[Candidate], selection: npt.NDArray[np.bool_], sign: int, metric: str) -> Choice:
    passing = [c for c in candidates if c.passed]
    picked_rows, rows = int(selection.sum()), len(selection)
    facts: dict[str, Any] = {"mode": "split", "rows": picked_rows, "candidates": len(candidates), "optimism": None,
                             "tied_with": []}
    if not passing or picked_rows == 0 or picked_rows == rows:
        return Choice(None, f"no passing configuration to pick among on a split of {rows} rows", facts)
    winner, tied, lead, why = _ranked_winner(passing, selection, sign)
    picked, confirmed = winner.values[selection], winner.values[~selection]
    interval = _interval(confirmed, 0.95, sides=2)
    optimism = sign * (float(picked.mean()) - float(confirmed.mean()))
    facts.update(optimism=optimism, tied_with=tied, winner=winner.config,
                 confirmation={"mean": float(confirmed.mean()), "ci_low": interval.low, "ci_high": interval.high,
                               "n": len(confirmed)})
    head = (f"{lead} {metric} on the selection half ({float(picked.mean()):.4g}, "
            f"{picked_rows} of {rows} rows) among {_count(passing)}{why}; confirmation half "
            f"{float(confirmed.mean()):.4g} [{interval.low:.4g}, {interval.high:.4g}]")
    failed = [check for check in winner.checks if not _clears(check, check.verdict.get("level"), confirmation=True)]
    if failed:
        verdict = failed[0].verdict
        facts["failed_on_confirmation"] = [f"{c.verdict['metric']} {threshold_text(c.verdict)}" for c in failed]
        return Choice(None, f"{winner.config} was picked on the selection half but does not clear "
                            f"{verdict['metric']} {threshold_text(verdict)} on the confirmation half ({head})", facts)
    return Choice(winner.config, head, facts)


def _holm(candidates: Sequence[Candidate], sign: int, metric: str, seed: str) -> Choice:
    from ..stats import holm_passes

    def clears(i: int, holm_level: float) -> bool:  # holm_level = 1 - 1/r: each check's own alpha over r
        c = candidates[i]
        return c.passed and all(_clears(check, 1 - (1 - check.verdict["level"]) * (1 - holm_level))
                                for check in c.checks if check.verdict.get("level") is not None)

    kept_flags = holm_passes(clears, len(candidates), alpha=1.0)
    kept = [c for c, kept_ in zip(candidates, kept_flags, strict=True) if kept_]
    rows = len(candidates[0].values) if candidates else 0
    dropped = [c.config for c, kept_ in zip(candidates, kept_flags, strict=True) if c.passed and not kept_]
    facts: dict[str, Any] = {"mode": "holm", "rows": rows, "candidates": len(candidates), "dropped": dropped,
                             "optimism": None, "tied_with": []}
    leveled = any(check.verdict.get("level") is not None for c in candidates for check in c.checks)
    over = f" that clear their thresholds Holm-adjusted over {len(candidates)}" if leveled else ""
    if not kept:
        return Choice(None, f"no configuration clears its thresholds Holm-adjusted over {len(candidates)}", facts)
    winner, tied, lead, why = _ranked_winner(kept, np.ones(rows, dtype=bool), sign)
    facts.update(tied_with=tied, winner=winner.config, optimism=_max_optimism(kept, sign, seed))
    mean = float(winner.values.mean())
    return Choice(winner.config, f"{lead} {metric} ({mean:.4g}) among {_count(kept)}{over}{why}", facts)


def _ranked_winner(candidates: Sequence[Candidate], rows: npt.NDArray[np.bool_],
                   sign: int) -> tuple[Candidate, list[str], str, str]:
    """The best on ``rows``; when the runner-up is within noise of it, the default, then the cheapest, of
    the best and every configuration tied with it. Returns it, the others tied, and the words saying so."""
    order = sorted(candidates, key=lambda c: (-sign * float(c.values[rows].mean()), not c.default, c.config))
    best = order[0]
    lead = f"{_best_word(sign)} mean"
    if len(order) < 2 or not _tied(best.values[rows], order[1].values[rows]):
        return best, [], lead, ""
    group = [best, *(c for c in order[1:] if _tied(best.values[rows], c.values[rows]))]
    chosen = min(group, key=lambda c: (not c.default, *c.spend))  # stable: the better mean on equal keys
    others = [c.config for c in group if c is not chosen]
    if chosen is best:
        return chosen, others, lead, f"; statistically tied with {', '.join(others)}: chose the best mean"
    why = "the default variants" if chosen.default and not best.default else "the cheaper one"
    tied = ", ".join(f"{c.config} ({float(c.values[rows].mean()):.4g})" for c in group if c is not chosen)
    return chosen, others, "mean", f"; statistically tied with {tied}: chose {why}"


def _tied(best: Array, other: Array) -> bool:
    """The two-sided paired interval of best - other on the same rows holds 0."""
    from ..stats import paired_difference, paired_mean_difference

    if len(best) < 2:
        return True
    binary = bool(np.isin(best, (0.0, 1.0)).all() and np.isin(other, (0.0, 1.0)).all())
    interval = (paired_difference(best, other, TIE_LEVEL, sides=2) if binary
                else paired_mean_difference(best, other, TIE_LEVEL, sides=2))
    return bool(interval.low <= 0 <= interval.high)


def _clears(check: Check, level: float | None, confirmation: bool = False) -> bool:
    """Whether ``check`` still holds at ``level`` (its bound) or as a point threshold (its mean), on all its
    rows or on the confirmation half's only. A check with no per-row values keeps its verdict."""
    values = check.values
    if values is None:
        return bool(check.verdict["passed"])
    if confirmation and check.selection is not None:
        values = values[~check.selection]
    if len(values) == 0:
        return False
    op, limit = check.verdict["op"], check.verdict["threshold"]
    if level is None or op not in (">=", ">", "<=", "<"):
        return OPERATORS[op](float(values.mean()), limit)
    interval = _interval(values, level, sides=1)
    return OPERATORS[op](interval.low if op in (">=", ">") else interval.high, limit)


def _interval(values: Array, level: float, sides: int) -> Any:
    from ..evaluation import interval_of  # Wilson for 0/1 rows, t otherwise: what the gates use

    return interval_of([float(v) for v in values], level, sides)


def _max_optimism(candidates: Sequence[Candidate], sign: int, seed: str) -> float:
    """The bootstrap estimate of how far the best of N means reads above its truth: the mean over paired
    resamples of the best resampled mean, minus the best observed mean (seeded, so reruns agree)."""
    from ..stats import bootstrap_indices

    if len(candidates) < 2 or len(candidates[0].values) < 2:  # one candidate: nothing was selected
        return 0.0
    values = sign * np.stack([c.values for c in candidates])
    picks = bootstrap_indices(values.shape[1], OPTIMISM_RESAMPLES, f"selection:{seed}")
    resampled = values[:, picks].mean(axis=2)  # configurations x resamples
    return max(0.0, float(resampled.max(axis=0).mean() - values.mean(axis=1).max()))  # below 0 is resampling noise


def _best_word(sign: int) -> str:
    return "highest" if sign > 0 else "lowest"


def _count(candidates: Sequence[Candidate]) -> str:
    return f"{len(candidates)} passing configuration{'s' * (len(candidates) != 1)}"


def selection_line(selection: Mapping[str, Any] | None, metric: str | None) -> str:
    """One terminal line: how the best was selected and how optimistic its number is."""
    if not selection or selection["candidates"] < 2:
        return ""
    if selection["mode"] == "none":
        return f"  selection: {selection['why']}: the best of several reads optimistic"
    tied = f"; statistically tied with {', '.join(selection['tied_with'])}" if selection.get("tied_with") else ""
    optimism = "" if selection["optimism"] is None else f"expected optimism {selection['optimism']:+.3f}"
    if selection["mode"] == "split":
        confirmed = selection.get("confirmation")
        numbers = (f", confirmation {metric} {confirmed['mean']:.4g} [{confirmed['ci_low']:.4g}, "
                   f"{confirmed['ci_high']:.4g}] on {confirmed['n']} rows" if confirmed else "")
        return f"  selection: split, picked on {selection['rows']} rows{numbers}; {optimism}{tied}"
    dropped = f", {len(selection['dropped'])} dropped by Holm" if selection.get("dropped") else ""
    configurations = f"{selection['candidates']} configuration{'s' * (selection['candidates'] != 1)}"
    return (f"  selection: Holm over {configurations} on {selection['rows']} rows"
            f"{dropped}; {optimism} (bootstrap, best of {selection['candidates']}){tied}")
