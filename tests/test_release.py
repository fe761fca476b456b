"""The release gate end to end: pytest runs on a small pure-Python DAG flow, then the MLflow
registry (a SQLite file in the project) is opened with MLflow's own client."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project, outcomes, run

TEST = '''\
import pytest

THRESHOLD = {threshold}


@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={{"classify": "*"}})
def test_accuracy(flow_run):
    result = flow_run.evaluate("flows/ev", mapping={{"groundtruth": "${{data.label}}",
                                                    "prediction": "${{run.outputs.category}}"}})
    assert result.metrics["accuracy"] >= THRESHOLD
'''


@pytest.fixture(scope="module", autouse=True)
def _mlflow_loaded() -> None:
    """MLflow (and numpy under it) imported once in this process: in-process pytester runs drop the
    modules a run imported, and numpy cannot be imported twice."""
    import mlflow.pyfunc  # noqa: F401


@pytest.fixture
def released(project: Project) -> Project:
    return released_project(project)


def released_project(project: Project) -> Project:
    """clf (variant_0 right on every row, variant_1 on half) scored by ev; both pass 0.4."""
    project.dag_flow("clf")
    project.eval_flow("ev")
    project.data("small")
    project.pytester.makepyfile(test_clf=TEST.format(threshold=0.4))
    project.pytester.makeini("[pytest]\npromptflow_primary_metrics = clf: accuracy\n")
    return project


def release(project: Project, *args: str) -> pytest.RunResult:
    """A release that registers only (tests/test_deploy_release.py deploys)."""
    return run(project.pytester, "--promptflow-release", "--promptflow-target", "none", "--promptflow-report",
               "reports", *args)


def versions(project: Project) -> dict[str, list[str]]:
    """name -> versions, of every registered model and dataset in the project's store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project.pytester.path / 'mlflow.db'}")
    found: dict[str, list[str]] = {}
    for model in client.search_model_versions():
        found.setdefault(f"model:{model.name}", []).append(str(model.version))
    datasets = client.get_experiment_by_name("pytest-promptflow-datasets")
    for data in client.search_runs([datasets.experiment_id]) if datasets else []:
        found.setdefault(f"data:{data.data.tags['dataset']}", []).append(data.data.tags["version"])
    return {k: sorted(v) for k, v in found.items()}


def store_digest(project: Project) -> str:
    database = project.pytester.path / "mlflow.db"
    return hashlib.sha256(database.read_bytes()).hexdigest() if database.exists() else "absent"


def test_a_failing_threshold_writes_nothing_to_the_registry(released: Project) -> None:
    assert outcomes(release(released)) == {"passed": 2}
    before = store_digest(released)
    artifacts = sorted(p for p in (released.pytester.path / "mlartifacts").rglob("*"))
    released.pytester.makepyfile(test_clf=TEST.format(threshold=0.9))
    result = release(released)
    assert outcomes(result) == {"passed": 1, "failed": 1}
    result.stdout.fnmatch_lines(["promptflow release: nothing released: the session did not pass (exit status 1)"])
    assert store_digest(released) == before
    assert sorted(p for p in (released.pytester.path / "mlartifacts").rglob("*")) == artifacts


def test_first_release_registers_the_best_configuration_and_its_data(released: Project) -> None:
    result = release(released)
    result.stdout.fnmatch_lines([
        "promptflow release: clf: released classify=variant_0 as clf v1 (new); data: small v1 new",
    ])
    record = json.loads((released.pytester.path / "reports/release-clf.json").read_text())
    assert record["decision"] == "released" and record["variants"] == {"classify": "variant_0"}
    assert record["metrics"]["small"]["accuracy"] == 1.0
    assert record["model"]["created"] and record["datasets"][0]["created"]
    assert record["git_commit"] is not None and len(record["digest"]) == 64


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(encoding="utf-8", newline="") as rows:
        return list(csv.DictReader(rows))


def test_the_release_keeps_the_chosen_cells_rows_with_the_flow_version(released: Project) -> None:
    from pytest_promptflow.registry.mlflow_registry import MlflowRegistry

    registry = MlflowRegistry(f"sqlite:///{released.pytester.path / 'mlflow.db'}",
                              released.pytester.path / "mlartifacts")
    assert registry.released_rows("clf", "small") is None  # nothing released yet
    release(released)
    chosen = [row for row in _csv(released.pytester.path / "reports/rows.csv") if row["config"] == "classify=variant_0"]
    kept = registry.released_rows("clf", "small")
    assert kept is not None and kept.name == "small.csv"
    assert _csv(kept) == chosen and len(chosen) == 4 and all(row["id"] for row in chosen)
    assert registry.released_rows("clf", "hard") is None
    # new data, same flow: the reused model version now points at the new rows
    data = released.pytester.path / "data/small.jsonl"
    data.write_text(data.read_text().replace("a good day", "a very good day"))
    release(released)
    again = registry.released_rows("clf", "small")
    assert again is not None and "a very good day" in {row["data.text"] for row in _csv(again)}
    assert versions(released)["model:clf"] == ["1"]


def test_a_later_run_compares_with_the_released_rows(released: Project) -> None:
    """baseline: released reads the rows the release kept: before a release it is one line saying so; after it,
    variant_1 (right on half the rows) is compared with the released variant_0 on the same 4 rows."""
    compare = TEST.format(threshold=0.4).replace(
        'variants={"classify": "*"})', 'variants={"classify": "*"}, baseline="released")') + (
        '    flow_run.expect("score not below baseline at 95%")\n')
    released.pytester.makepyfile(test_clf=compare)
    before = run(released.pytester)
    before.stdout.fnmatch_lines(["*no released version of flow clf has stored rows of dataset small; release it "
                                 "first*"])
    released.pytester.makepyfile(test_clf=TEST.format(threshold=0.4))
    release(released)
    released.pytester.makepyfile(test_clf=compare)
    after = run(released.pytester, "--promptflow-report", "again")
    assert outcomes(after) == {"passed": 2}, after.stdout.str()  # 4 rows cannot show variant_1 is worse
    cells = json.loads((released.pytester.path / "again/report.json").read_text())["flows"][0]["cells"]
    verdicts = {cell["config"]: next(v for v in cell["verdicts"] if v.get("baseline")) for cell in cells}  # the
    # test's own assert on the metric is a verdict too
    weaker = verdicts["classify=variant_1"]
    assert (weaker["baseline"], weaker["n"], weaker["unpaired"], weaker["discordant"]) == ("released", 4, 0, 2)
    assert weaker["difference"] == -0.5 and weaker["underpowered"]


def test_the_model_version_says_how_it_was_selected(released: Project) -> None:
    """With a per-row primary metric the choice is fair (4 rows: Holm), and the model version's tags say so."""
    from mlflow import MlflowClient

    released.pytester.makeini("[pytest]\npromptflow_primary_metrics = clf: score\n")
    release(released)
    record = json.loads((released.pytester.path / "reports/release-clf.json").read_text())
    assert record["selection"]["mode"] == "holm" and record["primary_metric"] == "score"
    client = MlflowClient(tracking_uri=f"sqlite:///{released.pytester.path / 'mlflow.db'}")
    tags = client.get_model_version("clf", "1").tags
    assert tags["selection.mode"] == "holm" and float(tags["selection.optimism"]) >= 0.0
    assert tags["rows_run"]


def test_an_unchanged_second_release_creates_nothing_and_changes_create_exactly_what_changed(
        released: Project) -> None:
    release(released)
    result = release(released)
    result.stdout.fnmatch_lines(["*clf: released classify=variant_0 as clf v1 (unchanged, reused); data: small v1 reused"])
    assert versions(released) == {"model:clf": ["1"], "data:small": ["1"]}

    data = released.pytester.path / "data/small.jsonl"
    data.write_text(data.read_text().replace("a good day", "a very good day"))
    result = release(released)
    result.stdout.fnmatch_lines(["*clf: released classify=variant_0 as clf v1 (unchanged, reused); data: small v2 new"])

    decorate = released.pytester.path / "flows/clf/decorate.py"
    decorate.write_text(decorate.read_text() + "\n# a changed prompt\n")
    result = release(released)
    result.stdout.fnmatch_lines(["*clf: released classify=variant_0 as clf v2 (new); data: small v2 reused"])
    assert versions(released)["model:clf"] == ["1", "2"]


def test_the_registered_flow_loads_back_and_answers_like_the_flow(released: Project,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    release(released)
    import mlflow

    # the environment, not mlflow.set_tracking_uri: its global would outlive this test in the process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{released.pytester.path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/clf/1")
    answers = model.predict([{"text": "a good day"}, {"text": "awful service"}])
    assert [a["category"] for a in answers] == ["positive", "negative"]


def test_a_deselected_item_blocks_its_flow(released: Project) -> None:
    result = release(released, "-k", "variant_1")
    result.stdout.fnmatch_lines(["promptflow release: clf: not released: some of its items were deselected*"])
    assert store_digest(released) == "absent"


def test_approval_is_required_then_recorded_then_checked_against_the_digest(released: Project) -> None:
    result = release(released, "--promptflow-require-approval")
    result.stdout.fnmatch_lines([
        "promptflow release: clf: pending approval; approve with: pytest-promptflow approve clf-* --dir */releases"])
    assert store_digest(released) == "absent"
    line = next(line for line in result.outlines if "approve with" in line)
    command = line.split("approve with: ", 1)[1].split()
    approve = subprocess.run([sys.executable, "-m", "pytest_promptflow.cli", *command[1:], "--by", "alice"],
                             capture_output=True, text=True, check=False)
    assert approve.returncode == 0, approve.stderr
    result = release(released, "--promptflow-require-approval")
    result.stdout.fnmatch_lines(["*clf: released classify=variant_0 as clf v1 (new)*"])
    record = json.loads((released.pytester.path / "reports/release-clf.json").read_text())
    assert record["approval"]["status"] == "approved" and record["approval"]["by"] == "alice"

    released.write("data/small.jsonl", (released.pytester.path / "data/small.jsonl").read_text()
                   + '{"text": "good grief", "label": "negative"}\n')
    result = release(released, "--promptflow-require-approval")
    result.stdout.fnmatch_lines(["promptflow release: clf: pending approval*"])  # what was approved changed
    assert versions(released)["model:clf"] == ["1"]


def test_a_rejected_release_is_not_carried_out_and_says_by_whom(released: Project) -> None:
    result = release(released, "--promptflow-require-approval")
    line = next(line for line in result.outlines if "approve with" in line)
    release_id = line.split("approve with: pytest-promptflow approve ", 1)[1].split()[0]
    reject = subprocess.run([sys.executable, "-m", "pytest_promptflow.cli", "reject", release_id, "--by", "bob",
                             "--reason", "recall too low for launch", "--dir", str(released.pytester.path / "releases")],
                            capture_output=True, text=True, check=False)
    assert reject.returncode == 0, reject.stderr
    result = release(released, "--promptflow-require-approval")
    result.stdout.fnmatch_lines(["promptflow release: clf: rejected by bob: recall too low for launch"])
    assert store_digest(released) == "absent"


def test_hooks_choose_the_configuration_and_amend_the_record(released: Project) -> None:
    released.pytester.makeconftest('''
def pytest_promptflow_release_choice(config, flow):
    assert {cell.config for cell in flow.cells} == {"classify=variant_0", "classify=variant_1"}
    return "classify=variant_1" if flow["best"] == flow.best else None


def pytest_promptflow_release_record(config, record):
    return {"ticket": "CHG-42", "decision": "overwritten?"} if record.decision == "released" else None
''')
    result = release(released)
    result.stdout.fnmatch_lines(["*clf: released classify=variant_1 as clf v1 (new)*"])
    record = json.loads((released.pytester.path / "reports/release-clf.json").read_text())
    assert record["ticket"] == "CHG-42" and record["reason"] == "chosen by a pytest_promptflow_release_choice hook"


def test_two_releases_at_once_make_one_version(released: Project) -> None:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--promptflow-release",
               "--promptflow-target", "none", "--promptflow-report", "reports"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    runs = [subprocess.Popen(command, cwd=released.pytester.path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=300)[0] for r in runs]
    assert all(r.returncode == 0 for r in runs), outputs
    assert versions(released)["model:clf"] == ["1"]
    assert sum("(new)" in out for out in outputs) == 1, outputs
