"""Every file the plugin writes: no known secret in any of them, whatever an endpoint echoes, and every
writer survives any string (lone surrogates, NUL, control characters, megabytes in one value)."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, outcomes, run
from fault_endpoint import FaultEndpoint
from test_llm_faults import FAST, PROMPTY, containing, files_under

from pytest_promptflow import scrub
from pytest_promptflow.approvals import write_pending
from pytest_promptflow.deploy.answers import Answer, EndpointAnswers
from pytest_promptflow.reporting.html import HTML_ROWS_PER_CELL, HTML_VALUE_CHARS

ECHO_TEST = '''\
import pytest


@pytest.mark.promptflow(flow="flows/echo.prompty", data="data/rows.jsonl")
def test_echo(flow_run):
    result = flow_run.evaluate(lambda output: {"words": len(output.split())},
                               mapping={"output": "${run.outputs.output}"})
    assert result.metrics["words"] >= 2
'''
#: fails its threshold, so its worst rows (the echoed answers) reach the terminal and the JUnit file
FAILING_TEST = ECHO_TEST.replace(">= 2", ">= 100").replace("def test_echo", "def test_echo_fails")
CLASSIFY_TEST = '''\
import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/odd.jsonl", variants={"classify": "variant_0"})
def test_accuracy(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                    "prediction": "${run.outputs.category}"})
    assert result.metrics["accuracy"] >= 0.5
'''


@pytest.fixture(scope="module", autouse=True)
def _mlflow_loaded() -> None:
    """MLflow (and numpy under it) imported once: in-process pytester runs drop the modules a run imported."""
    import mlflow.pyfunc  # noqa: F401


def test_a_key_the_endpoint_echoes_is_in_no_report_mlflow_or_release_file(
        project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = f"sk-planted-{uuid.uuid4().hex}"
    with FaultEndpoint(echo_header="api-key") as endpoint:
        monkeypatch.setenv("AOAI_API_KEY", key)
        monkeypatch.setenv("AOAI_API_BASE", endpoint.url)
        project.write("flows/echo.prompty", PROMPTY)
        project.pytester.makeini(FAST + "promptflow_primary_metrics = echo: words\n")
        project.data("rows", [{"text": text} for text in ("first row", "second row", "third row")])
        project.pytester.makepyfile(test_echo=ECHO_TEST)
        result = run(project.pytester, "--promptflow-release", "--promptflow-target", "none", "--promptflow-mlflow",
                     "--promptflow-report", "reports", "--junitxml=junit.xml", "-rA")
        assert outcomes(result) == {"passed": 1}, result.stdout.str()
        assert {r.headers.get("api-key") for r in endpoint.requests} == {key}  # sent, so echoed in every answer
        project.pytester.makepyfile(test_echo_fails=FAILING_TEST)
        failed = run(project.pytester, "test_echo_fails.py", "--junitxml=junit-failed.xml")
        assert outcomes(failed) == {"failed": 1}
    assert f"first row {scrub.REDACTED}" in (project.path / "junit-failed.xml").read_text()

    reports = project.path / "reports"
    record = json.loads((reports / "release-echo.json").read_text())
    assert record["decision"] == "released", record
    written = files_under(project.path)
    mlflow_files = [path for path in written if path.name == "mlflow.db" or "mlartifacts" in path.parts]
    assert project.path / "mlflow.db" in mlflow_files and len(mlflow_files) > 5  # runs, rows and the model logged
    assert containing([key], written) == []
    assert not [line for run_ in (result, failed) for line in run_.outlines + run_.errlines if key in line]
    for name in ("report.json", "rows.csv", "report.html"):
        assert f"first row {scrub.REDACTED}" in (reports / name).read_text(encoding="utf-8"), name
    released_rows = [path for path in mlflow_files if path.parent.name == "rows"]
    assert released_rows and all(scrub.REDACTED in path.read_text() for path in released_rows)


def test_endpoint_answers_and_approval_records_hold_no_known_secret(tmp_path: Path) -> None:
    key = f"planted-{uuid.uuid4().hex}"
    scrub.remember_secrets(key)
    answers = EndpointAnswers(0, {"echo": {"rows": [Answer({"text": "hi"}, {"output": f"echo: hi {key}"}, None, 0.1)]}})
    answers.write(tmp_path / "answers.json")
    pending = write_pending(tmp_path / "releases", "echo-1", {"flow": "echo", "overrides": {"note": key}})
    for path in (tmp_path / "answers.json", pending):
        text = path.read_text(encoding="utf-8")
        assert key not in text and scrub.REDACTED in text


def test_known_secrets_are_secret_named_variables_and_dotenv_fields_never_short_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_API_KEY", "env-secret-0123456789")
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "pipeline-token-0123")
    monkeypatch.setenv("HF_TOKEN", "short")  # under MIN_SECRET_CHARS: replacing it would garble any text
    monkeypatch.setenv("KEYBOARD_LAYOUT", "us-international")  # KEY is not a word of this name
    dotenv = tmp_path / ".env"
    dotenv.write_text('aoai={"api_key": "dotenv-secret-0123", "api_base": "http://127.0.0.1:1"}\n'
                      'search={"configs": {"endpoint": "http://x"}, "secrets": {"admin": "nested-secret-0123"}}\n'
                      "DB_PASSWORD='quoted-secret-0123'\nnot a line\n", encoding="utf-8")
    scrub.remember_dotenv(dotenv)
    text = ("env-secret-0123456789 pipeline-token-0123 dotenv-secret-0123 nested-secret-0123 quoted-secret-0123 "
            "short us-international http://127.0.0.1:1 embedded-model")
    assert scrub.scrub_text(text) == "*** *** *** *** *** short us-international http://127.0.0.1:1 embedded-model"


ODD = ["lone \ud800 surrogate", "nul \x00 inside", "escape \x1b[31mred\x1b[0m and bell \x07", "low \udcff surrogate",
       "carriage\rreturn and\nnewline", "plain good text"]


def test_a_dataset_with_lone_surrogates_and_control_characters_gives_every_report_whole(project: Project) -> None:
    project.dag_flow("clf")
    project.eval_flow("ev")
    rows = [{"text": f"good {text}", "label": "positive", "note\ud83d": text} for text in ODD]
    project.data("odd", rows)  # json.dumps writes a lone surrogate as its escape: a valid JSONL file
    project.pytester.makepyfile(test_clf=CLASSIFY_TEST)
    result = run(project.pytester, "--promptflow-report", "reports")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()

    reports = project.path / "reports"
    with (reports / "rows.csv").open(encoding="utf-8", newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == len(ODD)
    assert [line["data.text"] for line in table] == [f"good {text}".replace("\ud800", "\\ud800")
                                                     .replace("\udcff", "\\udcff") for text in ODD]
    assert "data.note\\ud83d" in table[0]
    document = json.loads((reports / "report.json").read_text(encoding="utf-8"))
    assert len(document["flows"][0]["cells"][0]["rows"]) == len(ODD)
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert page.rstrip().endswith("</html>") and "lone \\ud800 surrogate" in page


def test_a_megabyte_value_and_many_rows_keep_the_page_small_and_rows_csv_whole(project: Project) -> None:
    project.dag_flow("clf")
    project.eval_flow("ev")
    big = "good " + "x" * 3_000_000
    rows: list[dict[str, Any]] = [{"text": big, "label": "positive"}]
    rows += [{"text": f"good row {i}", "label": "positive"} for i in range(599)]  # more than the page shows
    project.data("odd", rows)
    project.pytester.makepyfile(test_clf=CLASSIFY_TEST)
    result = run(project.pytester, "--promptflow-report", "reports")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()

    reports = project.path / "reports"
    page = (reports / "report.html").stat().st_size
    assert page < 1_000_000 < len(big), page  # the value alone is three times the page
    text = (reports / "report.html").read_text(encoding="utf-8")
    assert big[:HTML_VALUE_CHARS] + "\u2026 [cut" in text and big[:HTML_VALUE_CHARS + 1] not in text
    assert "3,000,005 characters in all; the full value is in rows.csv" in text
    assert (f"shows the first {HTML_ROWS_PER_CELL:,} of {len(rows):,} rows; {len(rows) - HTML_ROWS_PER_CELL:,} rows are "
            "not shown; every row is in rows.csv") in text
    csv.field_size_limit(10_000_000)
    with (reports / "rows.csv").open(encoding="utf-8", newline="") as file:
        table = list(csv.DictReader(file))
    assert len(table) == len(rows) and table[0]["data.text"] == big
