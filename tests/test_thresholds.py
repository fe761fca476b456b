"""Threshold parsing and checking (pure)."""

from __future__ import annotations

import pytest

from pytest_promptflow.errors import SpecError, Where
from pytest_promptflow.thresholds import check, parse


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
