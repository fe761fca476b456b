"""A row that lacks a column the flow reads is an error row naming the row and the column; the other rows run.
A column no row has stays a usage error (a mapping) or gives the flow's default (no mapping)."""

from __future__ import annotations

from conftest import Project, outcomes, run

from pytest_promptflow.config import DatasetSpec
from pytest_promptflow.engine import missing_column, read_columns

ROWS = [{"id": "a", "text": "good day"}, {"id": "b", "body": "good"}, {"text": "bad day"}, {"body": "x"}]

MISSING_TESTS = """
import pytest


def classify(text: str = "good default", style: str = "plain") -> dict:
    return {"category": "positive" if "good" in text else "negative", "style": style}


@pytest.mark.promptflow(flow=classify, data="data/gaps.jsonl")
def test_by_name(flow_run):
    assert [row.failed for row in flow_run.rows] == [False, True, False, True]
    assert flow_run.rows[1].error_type == "MissingColumn"
    assert flow_run.rows[1].error_message == (
        "dataset 'gaps': row 1 (id 'b') has no column 'text' (flow input text, which other rows give); "
        "add it to the row")
    assert "row 3 has no column 'text'" in flow_run.rows[3].error_message
    assert [row.outputs["category"] for row in flow_run.rows if not row.failed] == ["positive", "negative"]
    assert {row.outputs["style"] for row in flow_run.rows if not row.failed} == {"plain"}  # no row has it
    assert flow_run.metrics["error_rate"] == 0.5


def same(groundtruth: str, prediction: str) -> dict:
    return {"match": float(groundtruth == prediction)}


@pytest.mark.promptflow(flow=classify, data="data/gaps.jsonl", mappings={"text": "${data.text}"})
def test_mapped(flow_run):
    assert [row.failed for row in flow_run.rows] == [False, True, False, True]
    assert flow_run.rows[3].error_message == (
        "dataset 'gaps': row 3 has no column 'text' (mapping text: ${data.text}); add it or fix the mapping")
    assert flow_run.rows[2].outputs["category"] == "negative"
    # an evaluator that reads the same column: the flow's error rows score the worst, the others their score
    for evaluator in (same, "flows/ev"):
        scored = flow_run.evaluate(evaluator, mapping={"groundtruth": "${data.text}",
                                                       "prediction": "${run.outputs.category}"})
        assert scored.evaluation.errors[1] == "flow row failed"
    # one that reads a column only some rows have: those rows are its errors, named
    for evaluator in (same, "flows/ev"):
        body = flow_run.evaluate(evaluator, mapping={"groundtruth": "${data.body}",
                                                     "prediction": "${run.outputs.category}"})
        assert body.evaluation.errors[0] == (
            "dataset 'gaps': row 0 (id 'a') has no column 'body' (mapping groundtruth: ${data.body}); "
            "add it or fix the mapping")
        assert body.evaluation.errors[1] == "flow row failed"


@pytest.mark.promptflow(flow=classify, data="data/gaps.jsonl", mappings={"text": "${data.txt}"})
def test_no_row_has_it(flow_run):
    pass
"""


def test_a_row_without_a_read_column_is_an_error_row_and_the_others_run(project: Project) -> None:
    project.data("gaps", ROWS)
    project.eval_flow("ev")
    project.write("test_gaps.py", MISSING_TESTS)
    result = run(project.pytester)
    assert outcomes(result) == {"passed": 2, "errors": 1}, result.stdout.str()
    text = result.stdout.str()
    assert "dataset 'gaps' (gaps.jsonl) has no column 'txt'" in text  # a column no row has: a usage error
    assert "KeyError" not in text and "Traceback" not in text


def test_the_columns_every_row_needs() -> None:
    by_name = DatasetSpec(name="d", source="d.jsonl")
    assert read_columns(by_name, ROWS, ["text", "style"]) == ["text"]  # style: no row, so the default
    mapped = DatasetSpec(name="d", source="d.jsonl", mappings={"question": "${data.body}", "style": "short"})
    assert read_columns(mapped, ROWS, ["question", "style"]) == ["body"]
    assert missing_column(mapped, 0, ROWS[0], ["body"]) == (
        "dataset 'd': row 0 (id 'a') has no column 'body' (mapping question: ${data.body}); add it or fix the mapping")
    assert missing_column(mapped, 1, ROWS[1], ["body"]) == ""
