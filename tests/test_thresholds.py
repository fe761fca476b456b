"""Threshold parsing and checking (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_promptflow.errors import SpecError, Where
from pytest_promptflow.evaluation import MetricValue
from pytest_promptflow.reporting.failure import verdict_table
from pytest_promptflow.stats import mean_interval, wilson
from pytest_promptflow.thresholds import (
    Comparison,
    Verdict,
    check,
    parse,
    parse_expectation,
    threshold_text,
    verdict_word,
)


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [(">= 0.6", ">=", 0.6), ("<=0.05", "<=", 0.05), ("> 1e-3", ">", 0.001), ("== 1", "==", 1.0), (0.7, ">=", 0.7)],
)
def test_parse(text, op, value):
    threshold = parse("m", text)
    assert (threshold.op, threshold.value) == (op, value)


@pytest.mark.parametrize("text", ["at least 0.6", ">= high", "=> 0.5", ""])
def test_unparsable_threshold_names_the_place_and_the_fix(text):
    with pytest.raises(SpecError) as info:
        parse("accuracy", text, Where("experiment.yaml", 12))
    assert str(info.value).startswith("experiment.yaml:12: cannot parse threshold accuracy")
    assert '">= 0.6"' in str(info.value)


def test_check_gives_one_verdict_per_threshold_and_missing_fails():
    verdicts = check((parse("accuracy", ">= 0.6"), parse("error_rate", "<= 0.05"), parse("f1", ">= 0")),
                     {"accuracy": 0.5, "error_rate": 0.0})
    assert [v.passed for v in verdicts] == [False, True, False]
    assert verdicts[0].actual == 0.5 and verdicts[2].actual is None


def _metric(name: str, values: list[float]) -> MetricValue:
    return MetricValue(sum(values) / len(values), name, "cell", len(values), values=values)


@pytest.mark.parametrize(("text", "op", "value", "level"), [
    (">= 0.8 at 95%", ">=", 0.8, 0.95), ("<0.1 at 99.5 %", "<", 0.1, 0.995), ("> 0.5  at  90%", ">", 0.5, 0.9),
    (">= 0.8", ">=", 0.8, None),
])
def test_parse_a_confidence_level(text, op, value, level):
    threshold = parse("m", text)
    assert (threshold.op, threshold.value, threshold.level) == (op, value, level)
    assert str(threshold) == f"m {op} {value:g}" + (f" at {level * 100:g}%" if level else "")


@pytest.mark.parametrize(("text", "problem", "fix"), [
    (">= 0.8 at 150%", "has confidence level '150%'", 'write a percentage between 0% and 100%, e.g. "at 95%"'),
    (">= 0.8 at 0%", "has confidence level '0%'", "write a percentage"),
    (">= 0.8 at 0.95", "has confidence level '0.95'", "write a percentage"),
    (">= 0.8 at", "says 'at' with no confidence level", 'write the level after it, e.g. ">= 0.8 at 95%"'),
    ("== 0.8 at 95%", "puts a confidence level on ==", "a level goes with >=, >, <= or <"),
])
def test_a_bad_level_is_one_line_with_the_place_and_the_fix(text, problem, fix):
    with pytest.raises(SpecError) as info:
        parse("accuracy", text, Where("experiment.yaml", 7))
    message = str(info.value)
    assert message.startswith(f"experiment.yaml:7: threshold accuracy: {text!r} {problem}; ")
    assert fix in message and "\n" not in message


def test_a_level_checks_the_one_sided_bound_in_the_operators_direction():
    accuracy = _metric("accuracy", [1.0] * 36 + [0.0] * 4)  # 0.9 of 40 rows
    lower = wilson(36, 40, 0.95, sides=1).low
    passed, failed = check((parse("accuracy", f">= {lower - 0.01} at 95%"), parse("accuracy", ">= 0.8 at 95%")),
                           {"accuracy": accuracy})
    assert passed.passed and passed.bound == pytest.approx(lower)
    assert not failed.passed and failed.actual == 0.9  # the point estimate clears 0.8; its bound (~0.78) does not
    assert lower < 0.8 < 0.9
    assert check((parse("accuracy", ">= 0.8"),), {"accuracy": accuracy})[0].passed  # old form: the point
    error = _metric("error_rate", [0.0] * 38 + [1.0] * 2)
    upper = wilson(2, 40, 0.95, sides=1).high
    low_enough, too_high = check((parse("error_rate", f"<= {upper + 0.01} at 95%"),
                                  parse("error_rate", "<= 0.1 at 95%")), {"error_rate": error})
    assert low_enough.passed and low_enough.bound == pytest.approx(upper)
    assert not too_high.passed and upper > 0.1


def test_a_continuous_metric_uses_a_t_bound():
    score = _metric("score", [3.0, 4.0, 5.0, 4.0, 4.5, 3.5])
    expected = mean_interval(list(score.values or ()), 0.9, sides=1)
    verdict = check((parse("score", "> 3.5 at 90%"),), {"score": score})[0]
    assert verdict.bound == pytest.approx(expected.low) and expected.low > 3.5 and verdict.passed
    assert score.ci() == mean_interval(list(score.values or ()))  # 95% two-sided, a t interval
    assert score.ci(0.9).method == "t" and _metric("a", [1.0, 0.0]).ci().method == "wilson-cc"


def test_a_level_on_a_metric_with_no_interval_names_the_place_and_the_fix():
    logged = MetricValue(0.9, "accuracy", "cell", 4)  # from an aggregation node's log_metric: no per-row values
    assert logged.ci() is None
    with pytest.raises(SpecError) as info:
        check((parse("accuracy", ">= 0.8 at 95%", Where("experiment.yaml", 9)),), {"accuracy": logged})
    assert str(info.value) == ("experiment.yaml:9: accuracy has no interval (it comes from an aggregation node's "
                               "log_metric); drop 'at 95%' or gate a mean of per-row scores")
    latency = MetricValue(1.0, "latency.p95", "cell", 4)
    with pytest.raises(SpecError, match=r"latency.p95 has no interval \(it is not a mean of per-row values\)"):
        check((parse("latency.p95", "<= 2 at 95%"),), {"latency.p95": latency})


def test_the_failure_table_shows_the_bound_and_the_level():
    accuracy = _metric("accuracy", [1.0] * 9 + [0.0])
    verdicts = check((parse("accuracy", ">= 0.8 at 95%"), parse("error_rate", "<= 0.1")),
                     {"accuracy": accuracy, "error_rate": 0.0})
    table = verdict_table(verdicts)
    assert table[0].split() == ["metric", "value", "threshold", "bound", "verdict"]
    bound = f"{verdicts[0].bound:.4g}"
    assert table[1].split() == ["accuracy", "0.9", ">=", "0.8", "at", "95%", bound, "(lower,", "95%)", "FAIL"]
    assert table[2].split() == ["error_rate", "0", "<=", "0.1", "-", "ok"]
    assert verdict_table(check((parse("error_rate", "<= 0.1"),), {"error_rate": 0.0}))[0].split() == [
        "metric", "value", "threshold", "verdict"]  # no level, no bound column


@pytest.mark.parametrize(("text", "metric", "op", "level"), [
    ("accuracy >= 0.8 at 95%", "accuracy", ">=", 0.95), ("acc.score<0.5", "acc.score", "<", None)])
def test_parse_an_expectation(text, metric, op, level):
    threshold = parse_expectation(text)
    assert (threshold.metric, threshold.op, threshold.level) == (metric, op, level)


def test_an_unparsable_expectation_says_how_to_write_one():
    with pytest.raises(SpecError, match=r"test_x.py:3: cannot parse expectation 'accuracy'; write a metric"):
        parse_expectation("accuracy", Where("test_x.py", 3))


# --- baseline thresholds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "op", "margin", "level", "rule"), [
    (">= baseline - 0.02 at 95%", ">=", 0.02, 0.95, "non-inferior"),
    (">=baseline-0.1 at 99%", ">=", 0.1, 0.99, "non-inferior"),
    ("> baseline at 95%", ">", 0.0, 0.95, "superior"),
    ("not below baseline at 90%", "not below", 0.0, 0.9, "not-below"),
])
def test_parse_a_baseline_threshold(text, op, margin, level, rule):
    threshold = parse("accuracy", text)
    assert (threshold.baseline, threshold.op, threshold.value, threshold.level, threshold.rule) == (
        True, op, margin, level, rule)
    assert str(threshold) == f"accuracy {op} baseline{f' - {margin:g}' if margin else ''} at {level * 100:g}%"
    assert parse_expectation(f"accuracy {text}") == threshold
    assert not parse("accuracy", ">= 0.8 at 95%").baseline  # the old forms are unchanged


@pytest.mark.parametrize(("text", "message"), [
    (">= baseline - 0.02", "experiment.yaml:7: threshold accuracy: '>= baseline - 0.02' compares with a baseline but "
     "has no confidence level; add one, e.g. \">= baseline - 0.02 at 95%\""),
    ("not below baseline", "experiment.yaml:7: threshold accuracy: 'not below baseline' compares with a baseline but "
     "has no confidence level; add one, e.g. \"not below baseline at 95%\""),
    ("<= baseline at 95%", "experiment.yaml:7: cannot parse threshold accuracy: '<= baseline at 95%'; compare with a "
     "baseline as \">= baseline - 0.02 at 95%\", \"> baseline at 95%\" or \"not below baseline at 95%\""),
    ("> baseline at", "experiment.yaml:7: threshold accuracy: '> baseline at' says 'at' with no confidence level; "
     "write the level after it, e.g. \">= 0.8 at 95%\", or drop \"at\""),
    ("> baseline at 150%", "experiment.yaml:7: threshold accuracy: '> baseline at 150%' has confidence level '150%'; "
     "write a percentage between 0% and 100%, e.g. \"at 95%\""),
])
def test_a_bad_baseline_threshold_is_one_line(text, message):
    with pytest.raises(SpecError) as info:
        parse("accuracy", text, Where("experiment.yaml", 7))
    assert str(info.value) == message


def test_a_baseline_threshold_with_no_baseline_is_a_usage_error_and_with_one_is_compared():
    threshold = parse("accuracy", "> baseline at 95%", Where("experiment.yaml", 4))
    with pytest.raises(SpecError, match=r"^experiment.yaml:4: threshold accuracy > baseline at 95% compares with a "
                                        r"baseline, but none is declared; add 'baseline: cell:<configuration>'"):
        check((threshold,), {"accuracy": 0.9})
    comparison = Comparison("cell:defaults", 0.5, 0.1, 0.03, True, 40, 0, 6, 0.2, 0.3, 0.05, "tango")
    verdict = check((threshold,), {}, lambda t: Verdict(t, 0.6, 0.03, comparison))[0]
    record = verdict.record()
    assert verdict.passed and record["baseline"] == "cell:defaults" and record["underpowered"]
    assert {key: record[key] for key in ("margin", "n", "unpaired", "discordant", "mde", "power", "min_effect")} == {
        "margin": 0.0, "n": 40, "unpaired": 0, "discordant": 6, "mde": 0.2, "power": 0.3, "min_effect": 0.05}
    assert threshold_text(record) == "> baseline at 95%" and verdict_word(record) == "ok (underpowered: MDE 0.2 > 0.05)"
    strict = Verdict(threshold, 0.6, 0.03, dataclasses.replace(comparison, strict=True))
    assert not strict.passed and verdict_word(strict.record()) == "FAIL (underpowered: MDE 0.2 > 0.05)"
    table = verdict_table([verdict])
    assert table[1].split() == ["accuracy", "0.6", ">", "baseline", "at", "95%", "0.5", "+0.1", "0.03", "(lower,",
                                "95%)", "ok", "(underpowered:", "MDE", "0.2", ">", "0.05)"]
    assert table[2] == ("accuracy vs baseline cell:defaults: 40 paired rows (0 unpaired), 6 discordant; MDE 0.2 at "
                        "80% power, power 0.30 for 0.05")
