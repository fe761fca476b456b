"""The release as a program over report.json (issue 16, item 4): ``pytest-promptflow release REPORT`` on a saved
document does what ``--promptflow-release`` does after a passing session; a bad or old document is one line; a
merged document of shards is released only when every shard passed (item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import Project, outcomes, run
from test_release import release, released_project, versions
from test_shards import SUITE

from pytest_promptflow import cli
from pytest_promptflow.reporting.schema import SCHEMA_VERSION

WORKTREE = Path(__file__).parents[1]


@pytest.fixture(scope="module", autouse=True)
def _mlflow_loaded() -> None:
    """MLflow (and numpy under it) imported once in this process (see tests/test_release.py)."""
    import mlflow.pyfunc  # noqa: F401


def release_command(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pytest-promptflow release`` as a user runs it, in the project folder."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(WORKTREE), str(Path(__file__).parent)])}
    return subprocess.run([sys.executable, "-m", "pytest_promptflow.cli", "release", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def released(project: Project) -> Project:
    return released_project(project)


def _record(folder: Path, flow: str = "clf") -> dict[str, Any]:
    return json.loads((folder / f"release-{flow}.json").read_text(encoding="utf-8"))


def _same(record: dict[str, Any]) -> dict[str, Any]:
    """What both releases must agree on: the decision, the configuration, its evidence and what was registered."""
    model = {key: value for key, value in record["model"].items() if key != "created"}
    datasets = [{key: value for key, value in d.items() if key != "created"} for d in record["datasets"]]
    return {"decision": record["decision"], "configuration": record["configuration"], "digest": record["digest"],
            "metrics": record["metrics"], "model": model, "datasets": datasets}


def test_the_command_on_a_saved_report_registers_what_the_session_release_does(released: Project) -> None:
    folder = released.pytester.path
    assert outcomes(run(released.pytester, "--promptflow-report", "saved")) == {"passed": 2}
    assert versions(released) == {}  # a session without --promptflow-release registers nothing

    done = release_command(folder, "saved/report.json", "--target", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promptflow release: clf: released classify=variant_0 as clf v1 (new); data: small v1 new" in \
        done.stdout.splitlines(), done.stdout
    assert versions(released) == {"model:clf": ["1"], "data:small": ["1"]}
    by_command = _record(folder / "saved")

    # the session's release of the same suite finds exactly that registered: nothing new
    release(released).stdout.fnmatch_lines(["*clf: released classify=variant_0 as clf v1 (unchanged, reused)*"])
    assert versions(released) == {"model:clf": ["1"], "data:small": ["1"]}
    assert _same(_record(folder / "reports")) == _same(by_command)


def _document(**environment: Any) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "environment": {"exit_status": 0, **environment}, "flows": []}


@pytest.mark.parametrize("text, said", [
    ('{"version": 1, "environment": {}, "flows": []}', "is a report of schema_version 1, this pytest-promptflow "
                                                       f"reads schema_version {SCHEMA_VERSION}"),
    ('{"schema_version": 2, "flows": []}', "the document has no 'environment'"),
    (json.dumps({**_document(), "flows": [{"flow": "f", "primary_metric": None, "best": None, "best_reason": "",
                                           "cells": [{"cell": "x"}]}]}), "flows[0].cells[0] has no 'flow'"),
    (json.dumps(_document(exit_status="0")), "environment.exit_status is a string, not integer or null"),
    ('{"schema_version": 2, "flo', "cannot read the report (Unterminated string"),
])
def test_a_bad_or_old_document_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           text: str, said: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(text, encoding="utf-8")
    assert cli.main(["release", str(path), "--rootdir", str(tmp_path), "--target", "none"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"pytest-promptflow: error: {path}: {said}") and "; point at a report.json" in err, err


def test_merge_leaves_out_an_old_document_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text('{"version": 1, "environment": {}, "flows": []}')
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "report.json").write_text(json.dumps(_document()))
    assert cli.main(["merge", str(tmp_path / "old"), str(tmp_path / "new"), "--out", str(tmp_path / "m")]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        f"pytest-promptflow merge: {tmp_path / 'old' / 'report.json'}: is a report of schema_version 1, this "
        f"pytest-promptflow reads schema_version {SCHEMA_VERSION}; left out")


@pytest.fixture
def shards(project: Project, pytester: pytest.Pytester) -> pytest.Pytester:
    """The shard tests' suite (callables), each shard's report in s1/ and s2/, and their merge in merged/."""
    from conftest import HARD

    project.data("small")
    project.data("hard", HARD)
    project.write("word.txt", "good\n")
    pytester.makepyfile(test_suite=SUITE)
    for number in (1, 2):
        assert outcomes(run(pytester, "--promptflow-shard", f"{number}/2", "--promptflow-report", f"s{number}"))[
            "passed"] == 3
    return pytester


def _merge(folder: Path, out: str, *shards: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        cli.main(["merge", *shards, "--out", out])


def _release(folder: Path, report: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(["release", str(folder / report), "--rootdir", str(folder), "--target", "none"])
    return code, capsys.readouterr().out.splitlines()


def test_a_merged_report_is_released_only_when_every_shard_is_there_and_passed(
        shards: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    folder = shards.path
    _merge(folder, "both", "s1", "s2")
    code, lines = _release(folder, "both/report.json", capsys)
    assert code == 0 and lines == [  # the gate lets it through; callables are not registered
        f"promptflow release: {flow}: not released: flow {flow} is a Python callable: only flow folders and files "
        "are registered" for flow in ("keyword", "upbeat")]

    assert _release(folder, "s2/report.json", capsys) == (1, [
        "promptflow release: nothing released: it is shard 2/2 of a suite: merge every shard's report "
        "(pytest-promptflow merge) and release the merged report.json"])

    _merge(folder, "half", "s1")
    assert _release(folder, "half/report.json", capsys) == (1, [
        "promptflow release: nothing released: shard 2/2 is missing (merged: 1/2): merge every shard's report, "
        "a shard that wrote none ran no cell or crashed"])

    (folder / "word.txt").unlink()  # keyword's rows now raise: its gate fails in shard 2
    assert outcomes(run(shards, "--promptflow-shard", "2/2", "--promptflow-report", "s2"))["failed"] == 2
    _merge(folder, "failed", "s1", "s2")
    assert _release(folder, "failed/report.json", capsys) == (1, [
        f"promptflow release: nothing released: shard 2/2 ({Path('s2') / 'report.json'}) did not pass (exit status 1): "
        "release only when every shard passed"])


def test_the_shipped_schema_is_a_json_schema_that_real_reports_fit(shards: pytest.Pytester) -> None:
    """jsonschema (a dev dependency) checks the schema and the documents; the core's own reading agrees."""
    import jsonschema

    from pytest_promptflow.reporting.schema import SCHEMA_FILE, problem, schema

    jsonschema.Draft202012Validator.check_schema(schema())
    _merge(shards.path, "merged", "s1", "s2")
    for name in ("s1", "s2", "merged"):
        document = json.loads((shards.path / name / "report.json").read_text(encoding="utf-8"))
        jsonschema.validate(document, schema())
        assert problem(document) == "" and document["schema_version"] == SCHEMA_VERSION
        del document["flows"][0]["cells"][0]["outcome"]
        assert not jsonschema.Draft202012Validator(schema()).is_valid(document)
        assert problem(document) == "flows[0].cells[0] has no 'outcome'"
    assert SCHEMA_FILE.name in (WORKTREE / "pyproject.toml").read_text(encoding="utf-8")  # shipped as package data


@pytest.fixture
def local_endpoints(project: Project) -> Iterator[Path]:
    """The project's local endpoints folder; every endpoint is stopped after the test, whatever happened."""
    from pytest_promptflow.deploy.local import LocalTarget

    target = LocalTarget(project.path / ".promptflow-deploy")
    yield target.state_dir
    for endpoint in target.endpoints():
        for name in list(target.deployments(endpoint)):
            target.remove(endpoint, name)


def test_the_command_deploys_to_the_local_target_and_runs_the_endpoint_test(project: Project,
                                                                            local_endpoints: Path) -> None:
    """The deployment stage and its endpoint test (a child pytest) run from the saved report, as after a session."""
    from test_deploy_release import TEST, post

    from pytest_promptflow.deploy.local import LocalTarget

    project.dag_flow("clf")
    project.eval_flow("ev")
    project.data("small")
    project.pytester.makepyfile(test_clf=TEST)
    assert outcomes(run(project.pytester, "--promptflow-report", "saved")) == {"passed": 1}
    done = release_command(project.path, "saved", "--target", "local", "--endpoint-rows", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for expected in ("promptflow deploy: clf: endpoint test: 2 of 2 rows answered by blue",
                     "promptflow deploy: endpoint test: 1 item again on the endpoints' answers",
                     "promptflow deploy: clf: endpoint test passed",
                     "promptflow deploy: clf: traffic none -> blue 100%"):
        assert expected in lines, done.stdout
    router = LocalTarget(local_endpoints).router_url("clf")
    assert post(router + "/score", {"text": "a good day"}) == ({"category": "positive"}, "blue")
    assert _record(project.path / "saved")["deployment"]["status"] == "serving"


@pytest.mark.parametrize("environment, said", [
    ({"exit_status": 1}, "the session did not pass (exit status 1)"),
    ({"exit_status": None}, "the report records no exit status (an interrupted session?): run the suite again"),
    ({"shards": [{"path": "a", "shard": "1/3", "exit_status": 0}, {"path": "b", "shard": "3/3", "exit_status": 0}]},
     "shard 2/3 is missing (merged: 1/3, 3/3): merge every shard's report, a shard that wrote none ran no cell or "
     "crashed"),
    ({"shards": [{"path": "a", "shard": "1/2", "exit_status": 0}, {"path": "b", "shard": "2/3", "exit_status": 0}]},
     "the merged reports are of different splits (1/2, 2/3): merge the shards of one run"),
])
def test_a_document_that_did_not_pass_whole_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], environment: dict[str, Any], said: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**_document(), "environment": environment}), encoding="utf-8")
    assert _release(tmp_path, "report.json", capsys) == (1, [f"promptflow release: nothing released: {said}"])


def test_the_command_calls_the_root_conftests_release_hooks(released: Project) -> None:
    released.pytester.makeconftest('''
def pytest_promptflow_release_choice(config, flow):
    assert config.rootpath.is_dir() and flow.best == "classify=variant_0"
    return "classify=variant_1"


def pytest_promptflow_release_record(config, record):
    return {"ticket": "CHG-42"}
''')
    assert outcomes(run(released.pytester, "--promptflow-report", "saved")) == {"passed": 2}
    done = release_command(released.path, "saved", "--target", "none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promptflow release: clf: released classify=variant_1 as clf v1 (new); data: small v1 new" in \
        done.stdout.splitlines(), done.stdout
    record = _record(released.path / "saved")
    assert record["ticket"] == "CHG-42" and record["reason"] == "chosen by a pytest_promptflow_release_choice hook"
