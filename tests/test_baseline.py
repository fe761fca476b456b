"""Paired comparisons against a baseline: another cell, a previous rows.csv or the release; rows pair by identity,
the verdict says what it could detect (MDE, power for promptflow_min_effect), and bad input is one line."""

from __future__ import annotations

import csv
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from conftest import AGGREGATE_PY
from conftest import EXPERIMENT as CONFTEST_EXPERIMENT
from conftest import Project, outcomes, run

from pytest_promptflow import stats
from pytest_promptflow.errors import SpecError, Where
from pytest_promptflow.pairing import ComparisonSettings, ScoredRow, Side, compare, pair
from pytest_promptflow.thresholds import parse

#: 60 rows: 30 positive ("good ..."), 30 negative. classify=variant_0 (keyword) gets all 60 right; classify=variant_1
#: (always positive) the 30 positives: candidate variant_0 is better on 30 rows and worse on none.
MANY = [{"id": f"r{i}", "text": f"{'good' if i % 2 else 'bad'} row {i}", "label": "positive" if i % 2 else "negative"}
        for i in range(60)]

#: conftest's experiment on the many rows, with no thresholds (each test adds its own)
EXPERIMENT = CONFTEST_EXPERIMENT.split("thresholds:")[0].replace("small", "many")


def _project(project: Project) -> Project:
    project.dag_flow()
    project.eval_flow()
    project.data("many", MANY)
    return project


def _report(project: Project, folder: str = "report") -> dict:
    return json.loads((project.path / folder / "report.json").read_text())


def _verdicts(document: dict) -> dict[tuple[str, str], dict]:
    """(config, threshold text) -> verdict record."""
    from pytest_promptflow.thresholds import threshold_text

    return {(cell["config"], f"{v['metric']} {threshold_text(v)}"): v
            for flow in document["flows"] for cell in flow["cells"] for v in cell["verdicts"]}


# --- end to end: experiment.yaml ---------------------------------------------------------------------------------


def test_a_better_cell_passes_superiority_and_an_identical_one_only_not_below(project: Project) -> None:
    _project(project)
    project.experiment(EXPERIMENT + 'baseline: cell:classify=variant_1\nthresholds:\n  score:\n'
                       '  - "> baseline at 95%"\n  - "not below baseline at 95%"\n')
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    # variant_1 against itself: no difference, so "not below" holds and ">" does not
    result.stdout.fnmatch_lines([
        "*1 of 2 thresholds failed for cell clf-classify=variant_1-many (60 rows)*",
        "*metric*value*threshold*baseline*difference*bound*verdict*",
        "*score*0.5*> baseline at 95%*0.5*+0*(lower, 95%)  FAIL",  # it failed on its own: no power note
        "*score*0.5*not below baseline at 95%*0.5*+0*(upper, 95%)*ok*",
        "*score vs baseline cell:classify=variant_1: 60 paired rows (0 unpaired), 0 discordant; MDE * at 80% power*",
    ])
    failures = result.stdout.str().split("short test summary info")[0]  # under CI=true pytest repeats them whole
    assert "Traceback" not in result.stdout.str() and failures.count("60 paired rows") == 1
    verdicts = _verdicts(_report(project))
    better = verdicts[("classify=variant_0", "score > baseline at 95%")]
    assert better["passed"] and better["baseline"] == "cell:classify=variant_1" and better["rule"] == "superior"
    assert (better["actual"], better["baseline_value"], better["difference"]) == (1.0, 0.5, 0.5)
    assert (better["n"], better["unpaired"], better["discordant"], better["margin"]) == (60, 0, 30, 0.0)
    expected = stats.paired_difference_from_counts(30, 0, 60, 0.95, sides=1)
    assert better["bound"] == pytest.approx(expected.low) and better["method"] == "tango"
    check = stats.paired_power_check(expected, 0.05)
    assert better["mde"] == pytest.approx(check.mde) and better["power"] == pytest.approx(check.power)
    assert better["min_effect"] == 0.05 and better["underpowered"] is (check.mde > 0.05)
    same = verdicts[("classify=variant_1", "score > baseline at 95%")]
    assert not same["passed"] and same["discordant"] == 0 and same["difference"] == 0.0


def test_repeated_rows_pair_by_row_not_by_run(project: Project) -> None:
    """With every row run twice, each side has two runs per identity: they pair as one row (their mean), so the
    comparison still rests on 60 rows and is the one-run comparison of these deterministic flows."""
    _project(project)
    project.experiment(EXPERIMENT + 'repeat: 2\nbaseline: cell:classify=variant_1\nthresholds:\n  score:\n'
                       '  - "not below baseline at 95%"\n')
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    better = _verdicts(_report(project))[("classify=variant_0", "score not below baseline at 95%")]
    assert (better["n"], better["unpaired"], better["difference"]) == (60, 0, 0.5)


def test_a_logged_mean_pairs_on_the_column_it_is_the_mean_of(project: Project) -> None:
    """The evaluation flow's logged accuracy is the mean of its per-row score: compared with a baseline, it pairs
    on acc.score, the 60 rows."""
    _project(project)
    project.experiment(EXPERIMENT + 'baseline: cell:classify=variant_1\nthresholds:\n  accuracy: "> baseline at 95%"\n')
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    better = _verdicts(_report(project))[("classify=variant_0", "accuracy > baseline at 95%")]
    assert better["passed"] and (better["n"], better["discordant"], better["difference"]) == (60, 30, 0.5)


def test_an_underpowered_pass_says_so_and_strict_power_fails_it(project: Project) -> None:
    """60 rows disagreeing on 30: the MDE is far above 0.05, so the (real) win is 'ok (underpowered ...)'."""
    _project(project)
    project.experiment(EXPERIMENT + 'baseline: cell:classify=variant_1\nthresholds:\n'
                       '  score: ">= baseline - 0.02 at 95%"\n')
    # the baseline cell runs even though --promptflow-variants leaves it out of the selection
    result = run(project.pytester, "--promptflow-report", "report", "--promptflow-variants", "classify=variant_0")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    verdict = _verdicts(_report(project))[("classify=variant_0", "score >= baseline - 0.02 at 95%")]
    assert verdict["underpowered"] and verdict["mde"] > 0.05 and verdict["margin"] == 0.02
    assert verdict["threshold"] == -0.02 and verdict["rule"] == "non-inferior"
    word = f"ok (underpowered: MDE {verdict['mde']:.2g} > 0.05)"
    result.stdout.fnmatch_lines([f"*classify=variant_0-many*{word}*"])  # the terminal table
    strict = run(project.pytester, "--promptflow-strict-power", "-k", "variant_0")
    assert outcomes(strict) == {"failed": 1, "deselected": 1}
    strict.stdout.fnmatch_lines([f"*score*>= baseline - 0.02 at 95%*FAIL (underpowered: MDE {verdict['mde']:.2g}"
                                 " > 0.05)*"])
    project.write("pytest.ini", "[pytest]\npromptflow_min_effect = 0.6\n")  # an effect these rows can detect
    lenient = run(project.pytester, "--promptflow-strict-power", "-k", "variant_0")
    assert outcomes(lenient) == {"passed": 1, "deselected": 1}


# --- end to end: the marker and flow_run.expect --------------------------------------------------------------------

MARKER_TESTS = """
import pytest


def same(prediction, label):
    return {"match": float(prediction == label)}


MAPPING = {"prediction": "${run.outputs.category}", "label": "${data.label}"}


@pytest.mark.promptflow(flow="flows/clf", data="data/many.jsonl", variants={"classify": "*"},
                        baseline="cell:classify=variant_1")
def test_against_the_weak_variant(flow_run):
    flow_run.evaluate(same, mapping=MAPPING)  # the baseline cell is scored by this evaluator too
    flow_run.expect("match not below baseline at 95%")
    flow_run.expect("match > baseline at 95%")


@pytest.mark.promptflow(flow="flows/clf", data="data/many.jsonl", variants={"classify": "*"})
def test_expect_names_its_baseline(flow_run):
    flow_run.evaluate(same, mapping=MAPPING)
    flow_run.expect("match not below baseline at 95%", baseline="cell:classify=variant_0")
"""


def test_the_marker_and_expect_compare_with_a_baseline_cell(project: Project) -> None:
    _project(project)
    project.pytester.makepyfile(test_marker=MARKER_TESTS)
    result = run(project.pytester, "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 2, "failed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_against_the_weak_variant*variant_1*",
                                 "*match*0.5*> baseline at 95%*0.5*+0*FAIL*",
                                 "*test_expect_names_its_baseline*variant_1*",
                                 "*match*0.5*not below baseline at 95%*1*-0.5*(upper, 95%)*FAIL*"])
    verdicts = _verdicts(_report(project))
    assert verdicts[("classify=variant_0", "match > baseline at 95%")]["passed"]
    assert verdicts[("classify=variant_0", "match > baseline at 95%")]["discordant"] == 30
    worse = verdicts[("classify=variant_1", "match not below baseline at 95%")]
    assert not worse["passed"] and worse["baseline"] == "cell:classify=variant_0" and worse["difference"] == -0.5


# --- a previous run's rows.csv --------------------------------------------------------------------------------------


def test_a_previous_rows_csv_is_a_baseline(project: Project) -> None:
    _project(project)
    project.experiment(EXPERIMENT)
    first = run(project.pytester, "--promptflow-report", "before")
    assert outcomes(first) == {"passed": 2}, first.stdout.str()
    thresholds = 'thresholds:\n  score:\n  - "> baseline at 95%"\n  - "not below baseline at 95%"\n'
    project.experiment(EXPERIMENT + "baseline: ../before/rows.csv#classify=variant_1\n" + thresholds)
    named = run(project.pytester, "--promptflow-report", "after")
    assert outcomes(named) == {"passed": 1, "failed": 1}, named.stdout.str()
    verdict = _verdicts(_report(project, "after"))[("classify=variant_0", "score > baseline at 95%")]
    assert verdict["passed"] and verdict["baseline"] == "../before/rows.csv#classify=variant_1"
    assert (verdict["n"], verdict["discordant"], verdict["baseline_value"]) == (60, 30, 0.5)
    assert not verdict["rescored"]  # its stored scores were used
    # no configuration named: each cell against its own rows of the previous run, so nothing got better
    project.experiment(EXPERIMENT + "baseline: ../before\n" + thresholds)
    itself = run(project.pytester)
    assert outcomes(itself) == {"failed": 2}, itself.stdout.str()
    itself.stdout.fnmatch_lines(["*score*> baseline at 95%*FAIL*", "*score*not below baseline at 95%*ok*"])


def test_a_baseline_rows_failed_row_scores_the_worst_value(tmp_path) -> None:
    """A rows.csv row with an error and no score (a report from before error rows counted) scores 0."""
    from pytest_promptflow.baseline import csv_side

    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["flow", "cell", "config", "dataset", "id", "error", "acc.score"])
        writer.writerows([["clf", "c", "defaults", "d", "a", "", "1"],
                          ["clf", "c", "defaults", "d", "b", "boom", ""],
                          ["clf", "c", "defaults", "d", "'-c", "", "0.5"],
                          ["other", "c", "defaults", "d", "a", "", "0"]])
    side = csv_side(path, "clf", "d", "", "defaults", "rows.csv", None)
    assert side.values("acc.score") == {"a": 1.0, "b": 0.0, "-c": 0.5}


# --- pairing, pure ------------------------------------------------------------------------------------------------


def _side(label: str, scores: dict[str, float | None]) -> Side:
    return Side(label, tuple(ScoredRow(identity, {"e.s": value}) for identity, value in scores.items()))


def test_rows_pair_by_identity_and_unpaired_rows_are_counted() -> None:
    candidate = _side("cell c", {f"r{i}": float(i % 2) for i in range(40)} | {"new": 1.0})
    baseline = _side("baseline b", {f"r{39 - i}": float((39 - i) % 2) for i in range(40)} | {"old": 0.0})
    pairs = pair(candidate, baseline, "e.s", 0.10, None)
    assert pairs.candidate == pairs.baseline and len(pairs.candidate) == 40  # matched by identity, not position
    assert (pairs.only_candidate, pairs.only_baseline, pairs.unpaired) == (1, 1, 2)
    scored = _side("cell c", {f"r{i}": None if i == 3 else 1.0 for i in range(40)})  # its evaluator failed on r3
    assert (pair(scored, baseline, "e.s", 0.10, None).no_value, len(pair(scored, baseline, "e.s", 0.10, None).baseline)
            ) == (1, 39)


def test_too_many_unpaired_rows_no_common_row_and_shared_identities_are_one_line_each() -> None:
    where = Where("exp/experiment.yaml", 19)
    candidate = _side("cell c", {f"r{i}": 1.0 for i in range(10)})
    with pytest.raises(SpecError) as info:
        pair(candidate, _side("baseline b", {f"r{i}": 1.0 for i in range(8)}), "e.s", 0.10, where)
    assert str(info.value) == ("exp/experiment.yaml:19: e.s: 2 of 10 rows are unpaired (2 only in cell c, 0 only in "
                               "baseline b, 0 with no e.s value); compare on the same rows; at most 10% may be "
                               "unpaired (ini promptflow_max_unpaired)")
    with pytest.raises(SpecError, match=r"^exp/experiment.yaml:19: baseline b shares no row with cell c \(3 and 10 "
                                        r"rows\); compare on the same data"):
        pair(candidate, _side("baseline b", {"x": 1.0, "y": 0.0, "z": 1.0}), "e.s", 0.10, where)
    twice = Side("baseline b", (ScoredRow("r1", {"e.s": 1.0}), ScoredRow("r1", {"e.s": 0.0})))
    with pytest.raises(SpecError, match=r"baseline b: 2 rows share their identity with another row.*'id' column"):
        pair(candidate, twice, "e.s", 0.10, where)


def test_continuous_scores_use_the_paired_t_and_its_power() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.8, 200)
    candidate = _side("cell c", {f"r{i}": float(v + 0.1) for i, v in enumerate(base)})
    baseline = _side("baseline b", {f"r{i}": float(v + rng.normal(0, 0.05)) for i, v in enumerate(base)})
    verdict = compare(parse("e.s", "> baseline at 95%"), pair(candidate, baseline, "e.s", 0.1, None), "b",
                      ComparisonSettings(), "cell")
    comparison = verdict.comparison
    assert comparison is not None and verdict.passed and comparison.method == "t"
    assert comparison.difference == pytest.approx(0.1, abs=0.01) and comparison.discordant == 200
    assert not comparison.underpowered and comparison.power > 0.99  # se ~0.0035: 0.05 is 14 se away


# --- bad input: one line naming the file and the fix -------------------------------------------------------------


@pytest.mark.parametrize(("baseline", "threshold", "line"), [
    ("cell:nope", '"> baseline at 95%"', "*exp/experiment.yaml:19: baseline cell:nope: flow clf has no configuration "
     "'nope' on dataset many; its configurations: classify=variant_0, classify=variant_1"),
    ("released", '"> baseline at 95%"', "*exp/experiment.yaml:19: no released version of flow clf has stored rows "
     "of dataset many; release it first*"),
    ("cell:classify=variant_1", '"> baseline at 95%" ', None),
    (None, '"> baseline at 95%"', "*exp/experiment.yaml:21: threshold score > baseline at 95% compares with a "
     "baseline, but none is declared; add 'baseline: cell:<configuration>'*"),
    ("cell:classify=variant_1", '">= baseline - 0.02"', "*exp/experiment.yaml:21: threshold score: '>= baseline - "
     "0.02' compares with a baseline but has no confidence level; add one, e.g. \">= baseline - 0.02 at 95%\""),
])
def test_bad_baselines_are_one_line_naming_the_file_and_the_fix(project: Project, baseline, threshold, line) -> None:
    _project(project)
    declared = f"baseline: {baseline}\n" if baseline else "\n"
    project.experiment(EXPERIMENT + declared + "thresholds:\n  score: " + threshold + "\n")
    if line is None:  # a count the aggregation logs: no column's mean, so no per-row values
        project.write("flows/ev/aggregate.py", AGGREGATE_PY.replace(
            '    log_metric("accuracy", accuracy)\n',
            '    log_metric("accuracy", accuracy)\n    log_metric("misses", len(scores) - sum(scores))\n'))
        project.experiment(EXPERIMENT + declared + 'thresholds:\n  misses: "> baseline at 95%"\n')
        line = ("*exp/experiment.yaml:21: threshold misses > baseline at 95%: misses has no per-row values to "
                "pair (it comes from an aggregation node's log_metric); compare a per-row score: acc.score*")
    result = run(project.pytester)
    assert set(outcomes(result)) == {"failed"}, result.stdout.str()
    result.stdout.fnmatch_lines([line])
    assert "Traceback" not in result.stdout.str()


def test_a_missing_rows_csv_and_a_rows_csv_of_other_data_are_one_line(project: Project) -> None:
    _project(project)
    project.experiment(EXPERIMENT + "baseline: ../before/rows.csv\n" + 'thresholds:\n  score: "> baseline at 95%"\n')
    missing = run(project.pytester)
    missing.stdout.fnmatch_lines(["*exp/experiment.yaml:19: baseline '../before/rows.csv': no rows.csv at "
                                  "*before/rows.csv; point it (relative to *exp) at the rows.csv a run with "
                                  "--promptflow-report wrote*"])
    project.data("other", [{"id": f"x{i}", "text": "good", "label": "positive"} for i in range(5)])
    other = project.experiment(EXPERIMENT.replace("many", "other"), folder="first")
    assert outcomes(run(project.pytester, str(other), "--promptflow-report", "before")) == {"passed": 2}
    result = run(project.pytester, "exp")
    assert outcomes(result) == {"failed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["*exp/experiment.yaml:19: baseline ../before/rows.csv: *before/rows.csv has no rows "
                                 "of flow clf on dataset many; compare on the same data; it has flow clf on other"])
    renamed = (project.path / "before" / "rows.csv").read_text().replace(",other,", ",many,")
    (project.path / "before" / "rows.csv").write_text(renamed)  # the same names, other rows
    result = run(project.pytester, "exp")
    result.stdout.fnmatch_lines(["*exp/experiment.yaml:19: baseline ../before/rows.csv (classify=variant_* in "
                                 "rows.csv) shares no row with cell clf-classify=variant_*-many (5 and 60 rows)*"])
    assert "Traceback" not in result.stdout.str()


def test_a_baseline_that_is_not_one_is_refused_at_collection(project: Project) -> None:
    _project(project)
    project.experiment(EXPERIMENT + "baseline: \"cell:\"\n")
    result = run(project.pytester)
    result.stdout.fnmatch_lines(["*exp/experiment.yaml:19: baseline 'cell:' names no configuration; write "
                                 "cell:<configuration>*"])


# --- simulation: the shown power is the power one gets -----------------------------------------------------------


def _allowed_gap(suites: int) -> float:
    """0.05 plus three binomial standard errors of a simulated rate near 0.5."""
    return 0.05 + 3 * math.sqrt(0.25 / suites)


@pytest.mark.parametrize(("rows", "discordance"), [(400, 0.16), (400, 0.3), (800, 0.1)])
def test_the_shown_power_for_min_effect_matches_simulated_power(rows: int, discordance: float) -> None:
    """Truly better by min_effect = 0.05: the power each suite shows (from its own discordance) averages to the
    share of suites whose ``> baseline at 95%`` passes."""
    suites, effect = 4_000, 0.05
    p_better, p_worse = (discordance + effect) / 2, (discordance - effect) / 2
    counts = np.random.default_rng(rows).multinomial(rows, [p_better, p_worse, 1 - discordance], size=suites)[:, :2]
    pairs, inverse = np.unique(counts, axis=0, return_inverse=True)
    intervals = [stats.paired_difference_from_counts(int(b), int(w), rows, 0.95, 1) for b, w in pairs]
    passed = np.array([stats.superior(i).passed for i in intervals])[inverse.ravel()]
    shown = np.array([stats.paired_power_check(i, effect).power for i in intervals])[inverse.ravel()]
    assert shown.mean() == pytest.approx(passed.mean(), abs=_allowed_gap(suites))


@pytest.mark.parametrize(("rows", "noise"), [(40, 0.1), (200, 0.3)])
def test_continuous_shown_power_matches_simulated_power_and_identical_runs_alarm_at_most_5_percent(rows, noise):
    """Judge-like scores, truly better by min_effect: the shown power (paired t's se) averages to the share of
    ``> baseline at 95%`` passes; compared with a copy of itself, ``not below`` alarms at most 5%. Vectorised; the
    first suites check that the vectorised bounds and powers are the functions' own."""
    suites, effect = 4_000, 0.05
    rng = np.random.default_rng(rows)
    level = rng.uniform(0.2, 0.8, rows)
    baseline, better, same = (level + shift + rng.normal(0, noise, (suites, rows)) for shift in (0, effect, 0))
    critical = stats.t_quantile(0.95, rows - 1)

    def bounds(candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        difference = candidate - baseline
        mean, se = difference.mean(axis=1), difference.std(axis=1, ddof=1) / math.sqrt(rows)
        return mean - critical * se, mean + critical * se, se

    low, _, se = bounds(better)
    shown = np.array([NormalDist().cdf(effect / s - critical) for s in se])
    for i in range(20):
        interval = stats.paired_mean_difference(better[i], baseline[i], sides=1)
        assert interval.low == pytest.approx(low[i]) and interval.se == pytest.approx(se[i])
        assert stats.mean_power_check(interval, rows, effect).power == pytest.approx(shown[i])
    assert shown.mean() == pytest.approx((low > 0).mean(), abs=_allowed_gap(suites))
    _, high, _ = bounds(same)
    assert (high < 0).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / suites)


def test_baseline_verdicts_cross_from_xdist_workers(project: Project) -> None:
    _project(project)
    project.experiment(EXPERIMENT + 'baseline: cell:classify=variant_1\nthresholds:\n  score: "> baseline at 95%"\n')
    result = project.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    verdict = _verdicts(_report(project))[("classify=variant_0", "score > baseline at 95%")]
    assert verdict["passed"] and verdict["discordant"] == 30 and verdict["baseline"] == "cell:classify=variant_1"


def test_a_bad_min_effect_is_a_usage_error(project: Project) -> None:
    project.write("pytest.ini", "[pytest]\npromptflow_min_effect = 5%\n")
    result = run(project.pytester)
    result.stderr.fnmatch_lines(["*pytest-promptflow: ini promptflow_min_effect = '5%'; write a fraction between 0 "
                                 "and 1, e.g. 0.05"])


def test_a_stored_baseline_without_the_compared_score_is_rescored_from_its_outputs(project: Project) -> None:
    """The evaluator changed since the rows.csv was written (renamed acc -> judge): its stored outputs are scored by
    the current evaluator, so the comparison still rests on the same rows."""
    _project(project)
    project.experiment(EXPERIMENT)
    assert outcomes(run(project.pytester, "--promptflow-report", "before")) == {"passed": 2}
    renamed = EXPERIMENT.replace("- name: acc", "- name: judge")
    project.experiment(renamed + 'baseline: ../before/rows.csv#classify=variant_1\nthresholds:\n'
                       '  judge.score: "> baseline at 95%"\n')
    result = run(project.pytester, "--promptflow-report", "after")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    verdicts = _verdicts(_report(project, "after"))
    better = verdicts[("classify=variant_0", "judge.score > baseline at 95%")]
    assert better["passed"] and better["rescored"] and (better["baseline_value"], better["discordant"]) == (0.5, 30)
    assert not verdicts[("classify=variant_1", "judge.score > baseline at 95%")]["passed"]


def test_a_lower_is_better_metric_is_not_compared_with_a_baseline() -> None:
    from pytest_promptflow.pairing import score_column

    threshold = parse("error_rate", "not below baseline at 95%", Where("exp/experiment.yaml", 21))
    with pytest.raises(SpecError, match=r"^exp/experiment.yaml:21: threshold error_rate not below baseline at 95%: "
                                        r"error_rate is better lower, and a baseline comparison reads higher as "
                                        r"better; compare a score where higher is better$"):
        score_column(threshold, _side("cell c", {"r1": 1.0}), ["e"])
