"""The fair winner (reporting/selection.py): the split by row identity, Holm over the candidates, the tie rule,
on hand-made report documents; seeded simulations whose tolerance is their own binomial error; one pytester run."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

import numpy as np
import pytest
from conftest import Project, run

from pytest_promptflow.reporting.records import merge
from pytest_promptflow.reporting.selection import Candidate, Check, fair_choice, in_selection_half, selection_line
from pytest_promptflow.reporting.terminal import comparison_tables


def _allowed(rate: float, suites: int) -> float:
    """A simulated rate whose truth is at most ``rate`` stays under this (three binomial standard errors)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / suites)


def record(config: str, scores: Sequence[float], *, default: bool = False, cost: float = 0.0,
           verdicts: Sequence[dict[str, Any]] = (), outcome: str = "passed", ids: Sequence[str] | None = None,
           dataset: str = "small") -> dict[str, Any]:
    """An item's record of flow clf with one per-row score ``ev.score`` per row (row ids r0, r1, ...)."""
    ids = ids or [f"r{i}" for i in range(len(scores))]
    return {
        "flow": "clf", "cell": f"clf-{config}-{dataset}", "config": config, "variants": {}, "default": default,
        "overrides": {}, "dataset": dataset, "dataset_path": f"data/{dataset}.jsonl", "dataset_hash": "",
        "items": [{"nodeid": f"t.py::test[{config}-{dataset}]", "outcome": outcome}],
        "verdicts": [dict(v, item=f"t.py::test[{config}-{dataset}]") for v in verdicts],
        "metrics": {"score": float(np.mean(scores)), "cost.total": cost},
        "rows": [{"index": i, "id": identity, "data": {}, "inputs": {}, "outputs": {}, "error": None,
                  "latency": 0.1, "cached": False, "llm_calls": 0, "tokens": 0, "cost": 0.0,
                  "scores": {"ev.score": value}} for i, (identity, value) in enumerate(zip(ids, scores, strict=True))],
    }


def flow_of(*records: dict[str, Any], primary: str = "score") -> dict[str, Any]:
    document = merge(records, {"clf": primary}, {"run_id": "x"})
    return json.loads(json.dumps(document))["flows"][0]  # as report.json holds it


def at_level(threshold: float, level: float = 0.95) -> dict[str, Any]:
    return {"metric": "score", "op": ">=", "threshold": threshold, "actual": 0.0, "passed": True, "level": level}


# --- the split ----------------------------------------------------------------------------------------------


def test_the_split_is_by_identity_half_and_half_and_the_same_every_time():
    ids = [f"row-{i}" for i in range(2000)]
    halves = [in_selection_half(identity) for identity in ids]
    assert abs(sum(halves) - 1000) < 3 * math.sqrt(2000 * 0.25)
    assert halves == [in_selection_half(identity) for identity in ids]
    # pinned: sha256 of the identity, even last byte; a change would move rows between halves across releases
    assert halves[:8] == [False, True, True, False, True, False, True, False]


def test_at_200_rows_the_selection_half_picks_and_the_confirmation_half_gives_the_numbers():
    rng = np.random.default_rng(3)
    better = rng.binomial(1, 0.8, 240).astype(float)
    worse = rng.binomial(1, 0.4, 240).astype(float)
    flow = flow_of(record("v0", worse, default=True), record("v1", better))
    ids = [f"r{i}" for i in range(240)]
    confirming = [value for identity, value in zip(ids, better, strict=True) if not in_selection_half(identity)]
    picking = [value for identity, value in zip(ids, better, strict=True) if in_selection_half(identity)]
    assert flow["best"] == "v1"
    selection = flow["selection"]
    assert selection["mode"] == "split" and selection["rows"] == len(picking) and selection["tied_with"] == []
    assert selection["confirmation"]["mean"] == pytest.approx(np.mean(confirming))
    assert selection["confirmation"]["n"] == len(confirming)
    assert selection["confirmation"]["ci_low"] < np.mean(confirming) < selection["confirmation"]["ci_high"]
    assert selection["optimism"] == pytest.approx(np.mean(picking) - np.mean(confirming))
    assert "on the selection half" in flow["best_reason"] and "confirmation half" in flow["best_reason"]
    # rows in another order (another shard's merge): the same halves, the same numbers
    shuffled = rng.permutation(240)
    again = flow_of(record("v0", worse[shuffled], default=True, ids=[ids[i] for i in shuffled]),
                    record("v1", better[shuffled], ids=[ids[i] for i in shuffled]))
    assert again["best_reason"] == flow["best_reason"] and again["selection"]["rows"] == selection["rows"]
    assert again["selection"]["confirmation"] == pytest.approx(selection["confirmation"])


def test_under_200_rows_on_some_dataset_the_choice_is_holm():
    big, small = np.ones(240), np.ones(199)
    flow = flow_of(record("v0", big, default=True), record("v0", small, dataset="hard"),
                   record("v1", big), record("v1", small, dataset="hard"))
    assert flow["selection"]["mode"] == "holm" and flow["selection"]["rows"] == 439
    # one configuration is no selection: its 240 rows are not halved
    assert flow_of(record("v0", big, default=True))["selection"]["mode"] == "holm"


def test_a_winner_that_fails_its_threshold_on_the_confirmation_half_is_not_released():
    ids = [f"r{i}" for i in range(300)]
    # right on every selection-half row, on 60% of the confirmation half: passes 0.7 at 95% on all rows
    scores = [1.0 if in_selection_half(identity) or i % 5 < 3 else 0.0 for i, identity in enumerate(ids)]
    flow = flow_of(record("v0", scores, default=True, verdicts=[at_level(0.7)]), record("v1", [0.0] * 300))
    assert flow["best"] is None
    assert flow["best_reason"].startswith("v0 was picked on the selection half but does not clear score >= 0.7 at "
                                          "95% on the confirmation half")
    assert flow["selection"]["failed_on_confirmation"] == ["score >= 0.7 at 95%"]


def test_a_logged_mean_of_a_per_row_column_is_chosen_on_that_columns_rows():
    """An evaluation flow's aggregation logs accuracy = mean of its per-row score: that column is its rows."""
    def logged(config: str, scores: list[float], accuracy: float, default: bool = False) -> dict[str, Any]:
        found = record(config, scores, default=default)
        found["metrics"].update({"accuracy": accuracy, "ev.accuracy": accuracy})
        return found

    same = flow_of(logged("v0", [1.0] * 25 + [0.0] * 5, 25 / 30, True), logged("v1", [1.0] * 26 + [0.0] * 4, 26 / 30),
                   primary="accuracy")
    assert same["selection"]["mode"] == "holm" and same["best"] == "v0" and same["selection"]["tied_with"] == ["v1"]
    # logged as something else than the column's mean (a weighted accuracy): no per-row values, means decide
    other = flow_of(logged("v0", [1.0] * 25 + [0.0] * 5, 0.5, True), logged("v1", [1.0] * 26 + [0.0] * 4, 0.6),
                    primary="accuracy")
    assert other["selection"]["mode"] == "none" and other["best"] == "v1"


# --- Holm ----------------------------------------------------------------------------------------------------


def test_holm_drops_a_configuration_that_clears_its_level_only_unadjusted():
    threshold = 0.5
    strong = [1.0] * 34 + [0.0] * 6  # clears 0.5 at any level here
    marginal = [1.0] * 26 + [0.0] * 14  # 0.65: clears 0.5 at 95%, not at 1 - 0.05/2 (Wilson, continuity-corrected)
    flow = flow_of(record("v0", strong, default=True, verdicts=[at_level(threshold)]),
                   record("v1", marginal, verdicts=[at_level(threshold)]),
                   record("v2", marginal[::-1], verdicts=[at_level(threshold)]))
    assert flow["selection"]["mode"] == "holm" and flow["selection"]["dropped"] == ["v1", "v2"]
    assert flow["best"] == "v0"
    assert "among 1 passing configuration that clear their thresholds Holm-adjusted over 3" in flow["best_reason"]
    # without v0's strong rows no one is left
    alone = flow_of(record("v1", marginal, verdicts=[at_level(threshold)]),
                    record("v2", marginal[::-1], verdicts=[at_level(threshold)]))
    assert alone["best"] is None and alone["best_reason"] == "no configuration clears its thresholds Holm-adjusted " \
                                                             "over 2"


def test_holm_states_a_seeded_bootstrap_optimism_of_the_best_of_n():
    rng = np.random.default_rng(5)
    records = [record(f"v{i}", rng.binomial(1, 0.7, 40).astype(float), default=i == 0) for i in range(4)]
    flow, again = flow_of(*records), flow_of(*records)
    assert 0.0 < flow["selection"]["optimism"] < 0.1
    assert flow["selection"]["optimism"] == again["selection"]["optimism"]


# --- ties ---------------------------------------------------------------------------------------------------


def test_within_noise_the_default_variants_win_and_the_reason_says_tied():
    default = [1.0] * 25 + [0.0] * 5
    one_more = [1.0] * 26 + [0.0] * 4
    flow = flow_of(record("v0", default, default=True), record("v1", one_more))
    assert flow["best"] == "v0"
    assert flow["best_reason"] == ("mean score (0.8333) among 2 passing configurations; statistically tied with "
                                   "v1 (0.8667): chose the default variants")
    assert flow["selection"]["tied_with"] == ["v1"]
    assert "statistically tied with v1" in selection_line(flow["selection"], "score")


def test_within_noise_and_no_default_the_cheaper_wins():
    flow = flow_of(record("v1", [1.0] * 26 + [0.0] * 4, cost=2.0), record("v2", [1.0] * 25 + [0.0] * 5, cost=1.0))
    assert flow["best"] == "v2" and flow["best_reason"].endswith("statistically tied with v1 (0.8667): chose the "
                                                                 "cheaper one")


def test_continuous_scores_tie_by_the_paired_mean_difference():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 1, 50)
    flow = flow_of(record("v0", base, default=True), record("v1", np.clip(base + rng.normal(0.01, 0.2, 50), 0, 1)))
    assert flow["best"] == "v0" and flow["selection"]["tied_with"] == ["v1"]
    clear = flow_of(record("v0", base, default=True), record("v1", np.clip(base + 0.3, 0, 1)))
    assert clear["best"] == "v1" and clear["selection"]["tied_with"] == []


def test_a_clear_winner_is_not_a_tie():
    flow = flow_of(record("v0", [1.0] * 10 + [0.0] * 20, default=True), record("v1", [1.0] * 28 + [0.0] * 2))
    assert flow["best"] == "v1" and "tied" not in flow["best_reason"]


def test_the_terminal_says_how_the_best_was_selected():
    flow = flow_of(record("v0", [1.0] * 25 + [0.0] * 5, default=True), record("v1", [1.0] * 26 + [0.0] * 4))
    lines = comparison_tables({"flows": [flow]})
    assert lines[0] == "promptflow: flow clf, 2 cells; best: v0, score 0.8333 [0.65, 0.94], mean over 30 rows"
    assert lines[2].startswith("  selection: Holm over 2 configurations on 30 rows; expected optimism +0.")
    assert lines[2].endswith("statistically tied with v1")


# --- simulations ------------------------------------------------------------------------------------------------


def _identical(rng: np.random.Generator, configs: int, rows: int, truth: float,
               threshold: float | None = None) -> list[Candidate]:
    """``configs`` configurations whose true accuracy is ``truth`` on ``rows`` rows; with a threshold each is
    gated at ``>= threshold at 95%`` (passed: its item's own, unadjusted verdict)."""
    from pytest_promptflow.evaluation import interval_of

    candidates = []
    for i, values in enumerate(rng.binomial(1, truth, (configs, rows)).astype(float)):
        checks, passed = (), True
        if threshold is not None:
            passed = interval_of(list(values), 0.95, sides=1).low >= threshold
            checks = (Check(at_level(threshold), values),)
        candidates.append(Candidate(f"v{i}", values, passed, checks=checks))
    return candidates


@pytest.mark.parametrize("configs", [4, 8])
def test_simulated_split_winner_is_unbiased_where_the_best_of_n_is_not(configs):
    """400 rows, identical configurations at 0.70: the picked half reads high, the confirmation half does not."""
    rng, suites, truth = np.random.default_rng(configs), 1000, 0.7
    selection = np.array([in_selection_half(f"r{i}") for i in range(400)])
    confirmed, picked = [], []
    for _ in range(suites):
        choice = fair_choice(_identical(rng, configs, 400, truth), selection, 1, "score")
        confirmed.append(choice.selection["confirmation"]["mean"])
        picked.append(confirmed[-1] + choice.selection["optimism"])
    error = 3 * math.sqrt(truth * (1 - truth) / (400 - selection.sum()) / suites)
    assert abs(np.mean(confirmed) - truth) < max(0.005, error)
    assert np.mean(picked) - truth > 0.01  # what the split removes: the best of N on its own rows


@pytest.mark.parametrize("rows", [40, 120])
def test_simulated_holm_releases_a_truly_failing_configuration_at_most_5_percent(rows):
    """8 identical configurations exactly at their ``>= 0.7 at 95%`` threshold: any release is a false one."""
    rng, suites = np.random.default_rng(rows), 1500
    released = unadjusted = 0
    for _ in range(suites):
        candidates = _identical(rng, 8, rows, 0.7, threshold=0.7)
        unadjusted += any(c.passed for c in candidates)
        released += fair_choice(candidates, None, 1, "score").config is not None
    assert released / suites <= _allowed(0.05, suites)
    assert unadjusted / suites > 0.1  # what Holm removes: each gated alone at 5%, some one of 8 gets through


# --- end to end -------------------------------------------------------------------------------------------------

TIE_ROWS = [{"text": f"good thing {i}", "label": "positive"} for i in range(12)] + [
    {"text": "great", "label": "positive"}]  # only the always-positive variant_1 gets this one

TIE_TEST = '''\
import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/tie.jsonl", variants={"classify": "*"})
def test_score(flow_run):
    flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"})
'''


def test_two_configurations_within_noise_release_the_default(project: Project) -> None:
    project.dag_flow("clf")
    project.eval_flow("ev")
    project.data("tie", TIE_ROWS)
    project.pytester.makepyfile(test_tie=TIE_TEST)
    project.pytester.makeini("[pytest]\npromptflow_primary_metrics = clf: score\n")
    result = run(project.pytester, "--promptflow-report", "reports")
    result.assert_outcomes(passed=2)
    flow = json.loads((project.pytester.path / "reports" / "report.json").read_text())["flows"][0]
    assert flow["best"] == "classify=variant_0"
    assert flow["selection"]["tied_with"] == ["classify=variant_1"]
    result.stdout.fnmatch_lines([
        "promptflow: flow clf, 2 cells; best: classify=variant_0, score 0.9231 [[]0.62, 1], mean over 13 rows",
        "  why: mean score (0.9231) among 2 passing configurations; statistically tied with classify=variant_1 (1): "
        "chose the default variants",
        "  selection: Holm over 2 configurations on 13 rows; expected optimism *; statistically tied with "
        "classify=variant_1",
    ])


def test_a_row_its_evaluator_left_without_a_value_is_left_out_as_the_metric_leaves_it_out():
    """A judge that answered no score on two of three rows: the metric is the mean of the one value, and the
    choice's reason reads that same number (it read 1.667 for a 5, counting the two as 0)."""
    alone = record("defaults", [5.0, 0.0, 0.0], default=True)
    for row in alone["rows"][1:]:
        row["scores"] = {"ev.explanation": "no number in the answer"}
    alone["metrics"]["score"] = 5.0
    flow = flow_of(alone)
    assert flow["best"] == "defaults" and "(5)" in flow["best_reason"], flow["best_reason"]
    assert flow["selection"]["rows"] == 1
