"""A failing item shows its threshold table and its worst rows, and nothing else: promptflow's log lines and
per-row tracebacks go to promptflow.log (named in one line), the table is never cut by pytest's truncation of
assertion explanations, and a flow whose every row failed says so in its summary line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXPERIMENT, SMALL, Project, run

from pytest_promptflow.reporting.failure import worst_rows_lines

#: 20 rows, 5 of them make the classifier raise: accuracy 0.75 (the threshold asks 0.9)
TWENTY = (SMALL * 4)[:15] + [{"text": f"boom {i}", "label": "negative"} for i in range(5)]
MAPPING = '{"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"}'
MARKER_TESTS = f"""
import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
def test_assert(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={MAPPING})
    assert result.metrics["accuracy"] >= 0.9


@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
def test_expect(flow_run):
    flow_run.evaluate("flows/ev", mapping={MAPPING})
    flow_run.expect("accuracy >= 0.9")
"""


def twenty_rows(project: Project) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small", TWENTY)


def quiet(result: pytest.RunResult, log: Path) -> None:
    """No log line, traceback or captured section of promptflow's in the output: they are in the log file."""
    text = result.stdout.str()
    for noise in ("Traceback", "ToolExecutionError", "execution.flow", "Captured", "ERROR    Node"):
        assert noise not in text
    assert f"promptflow's log (failed rows' tracebacks): {log}" in text
    assert "Traceback" in log.read_text() and "ValueError: boom row" in log.read_text()


@pytest.mark.parametrize("front", ["experiment", "assert", "expect"])
def test_a_failing_item_shows_its_table_and_worst_rows_in_under_40_lines(project: Project, front: str,
                                                                         monkeypatch: pytest.MonkeyPatch):
    for variable in ("CI", "BUILD_NUMBER"):  # on CI pytest's short summary repeats a failure's whole message
        monkeypatch.delenv(variable, raising=False)
    twenty_rows(project)
    if front == "experiment":
        project.experiment(EXPERIMENT.replace('classify: "*"', "classify: [variant_0]")
                           .replace('">= 0.75"', '">= 0.9"').replace('error_rate: "<= 0.0"\n', ""))
        args = ["exp/experiment.yaml"]
    else:
        project.pytester.makepyfile(test_cells=MARKER_TESTS)
        args = ["test_cells.py", "-k", f"test_{front}"]
    result = run(project.pytester, "--promptflow-report", "report", *args)
    result.assert_outcomes(failed=1)
    assert len(result.outlines) < 40, result.stdout.str()
    result.stdout.fnmatch_lines(["*failed for cell *(20 rows, 5 failed and scored worst)",
                                 "*metric*value*threshold*verdict",
                                 "*accuracy*0.75*>= 0.9*FAIL",
                                 "*worst rows:",
                                 '*row 15: error ValueError: boom row: {"text": "boom 0"}'])
    assert "truncated" not in result.stdout.str()
    quiet(result, project.path / "report" / "promptflow.log")


def test_without_a_report_folder_the_log_is_in_a_private_temp_folder(project: Project):
    twenty_rows(project)
    project.pytester.makepyfile(test_cells=MARKER_TESTS)
    result = run(project.pytester, "-k", "test_expect")
    result.assert_outcomes(failed=1)
    from pytest_promptflow.isolation import private_home

    quiet(result, private_home() / "promptflow.log")


def test_a_flow_whose_every_row_failed_says_so_in_its_summary_line(project: Project):
    project.dag_flow()
    project.data("small", [{"text": "boom"}, {"text": "boom too"}])
    project.pytester.makepyfile(test_cells="""
import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
def test_rows(flow_run):
    flow_run.expect("error_rate <= 0")
""")
    result = run(project.pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["promptflow: flow clf, 1 cell; no best cell: every row failed, first: "
                                 "*ValueError: boom row*"])
    assert "promptflow_primary_metrics" not in result.stdout.str()


def test_a_worst_row_shows_the_last_answer_of_its_transcript_else_its_outputs():
    rows = [{"row": 3, "inputs": {"text": "a"}, "outputs": {"category": "pos"}, "score": 0.0, "error": None,
             "answer": 'the answer is "neg"\nreally'},
            {"row": 4, "inputs": {"text": "b"}, "outputs": {"category": "neg"}, "score": 0.5, "error": None},
            {"row": 5, "inputs": {"text": "c"}, "outputs": {}, "score": None, "error": "KeyError: 'x'",
             "answer": "no json here"}]
    assert worst_rows_lines(rows) == [
        "worst rows:",
        '  row 3: score 0: {"text": "a"} -> last answer "the answer is \\"neg\\"\\nreally"',
        '  row 4: score 0.5: {"text": "b"} -> {"category": "neg"}',
        '  row 5: error KeyError: \'x\': {"text": "c"} -> last answer "no json here"',
    ]
