"""MLflow tracking: each cell one run (params, metrics, tags, the report files as artifacts), read
back with MLflow's own client; off unless asked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import HARD, Project, outcomes, run

from pytest_promptflow.reporting import tracking
from pytest_promptflow.reporting.tracking import mlflow_key, mlflow_keys, param_items, redact, settings

# MLflow turns its usage telemetry on when imported outside a test or CI (as here, at collection):
# a file under ~/.config and, on the first run created, requests to MLflow's servers.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip("mlflow", reason="MLflow is the 'mlflow' extra (in 'dev')")

SUITE = """
    import pytest

    def exact(prediction, groundtruth):
        return {"exact": float(prediction == groundtruth)}

    @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"},
                            overrides={"nodes.classify.inputs.temperature": [0.0, 0.7]})
    def test_accuracy(flow_run):
        mapping = {"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"}
        flow_run.evaluate(exact, mapping=mapping)
        assert flow_run.evaluate("flows/ev", mapping=mapping).metrics["accuracy"] >= 0.75
"""
CELLS = [f"clf-classify={variant}-temperature={t}-small"
         for variant in ("variant_0", "variant_1") for t in ("0.0", "0.7")]


@pytest.fixture(scope="session")
def _mlflow_loaded() -> None:
    """Import MLflow's client and SQL store once, so in-process pytester runs (which drop the modules
    they imported) do not import a second copy of them."""
    import warnings

    with warnings.catch_warnings():  # SQLAlchemy's deprecation notes on MLflow's models
        warnings.simplefilter("ignore", DeprecationWarning)
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        from mlflow import MlflowClient  # noqa: F401


@pytest.fixture
def suite(project: Project, pytester: pytest.Pytester, _mlflow_loaded: None) -> Project:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    pytester.makepyfile(test_suite=SUITE)
    return project


def _runs(uri: str, experiment: str = "pytest-promptflow") -> list[Any]:
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} in {uri}"
    return sorted(client.search_runs([found.experiment_id], max_results=1000), key=lambda r: r.info.run_name)


def test_each_cell_is_one_run_with_params_metrics_tags_and_report_files(
        suite: Project, pytester: pytest.Pytester, tmp_path: Path) -> None:
    uri = f"sqlite:///{(tmp_path / 'store' / 'mlflow.db').as_posix()}"
    result = run(pytester, "--promptflow-report", "out", "--promptflow-mlflow", "--promptflow-mlflow-uri", uri)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([f"promptflow: 4 cells logged as runs of MLflow experiment pytest-promptflow at {uri}"])
    runs = _runs(uri)
    assert [r.info.run_name for r in runs] == CELLS
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("pytest-promptflow")
    assert experiment.artifact_location == (tmp_path / "store" / "mlartifacts").as_uri()
    report_files = sorted(path.name for path in (pytester.path / "out").iterdir() if path.is_file())  # not runs/
    assert {"report.json", "rows.csv", "metrics.csv", "experiments.csv"} <= set(report_files)
    for found in runs:
        variant, temperature = found.info.run_name.split("-")[1:3]
        params = found.data.params
        assert params == {
            "flow": "clf", "config": f"{variant}-{temperature}", "variant.classify": variant.partition("=")[2],
            "override.nodes.classify.inputs.temperature": temperature.partition("=")[2], "dataset": "small",
            "dataset_hash": params["dataset_hash"], "git_commit": params["git_commit"], "build_id": params["build_id"],
            "promptflow_env": "", "llm_mode": "cache"}
        assert len(params["dataset_hash"]) == 64
        metrics = found.data.metrics
        assert {"accuracy", "ev.accuracy", "exact", "exact.exact", "error_rate", "rows", "cost.total"} <= set(metrics)
        passed = variant == "classify=variant_0"
        assert metrics["accuracy"] == (1.0 if passed else 0.5)
        assert metrics["rows"] == 4.0
        assert found.data.tags["outcome"] == ("passed" if passed else "failed")
        assert found.info.status == ("FINISHED" if passed else "FAILED")
        assert [a.path for a in client.list_artifacts(found.info.run_id)] == report_files
    best = [r.info.run_name for r in runs if r.data.tags["best"] == "yes"]
    assert best == ["clf-classify=variant_0-temperature=0.0-small"]  # a tie: the first configuration by name
    assert not (pytester.path / "mlruns").exists() and not (pytester.path / "mlflow.db").exists()


def test_ini_turns_it_on_default_store_in_the_rootdir_and_runs_add_up(
        suite: Project, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\npromptflow_mlflow = true\npromptflow_mlflow_experiment = nightly\n")
    for _ in range(2):
        result = run(pytester, "-k", "variant_0 and 0.0")  # no report folder: the runs still get the files
        result.assert_outcomes(passed=1, deselected=3)
    uri = f"sqlite:///{(pytester.path / 'mlflow.db').as_posix()}"
    runs = _runs(uri, "nightly")
    assert [r.info.run_name for r in runs] == [CELLS[0]] * 2
    assert runs[0].data.tags["promptflow.session"] != runs[1].data.tags["promptflow.session"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"report.json", "rows.csv"}
    assert (pytester.path / "mlartifacts").is_dir()
    assert not (pytester.path / "mlruns").exists()


def test_without_the_option_nothing_is_logged(suite: Project, pytester: pytest.Pytester) -> None:
    result = run(pytester, "--promptflow-report", "out")
    result.assert_outcomes(passed=2, failed=2)
    assert "MLflow" not in result.stdout.str()
    assert not (pytester.path / "mlflow.db").exists()
    assert not (pytester.path / "mlartifacts").exists() and not (pytester.path / "mlruns").exists()


def test_under_xdist_the_controller_logs_each_cell_once_without_mlflow_telemetry(
        project: Project, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, _mlflow_loaded: None) -> None:
    """Also: MLflow's usage telemetry stays off, though MLflow would turn it on outside a test or CI."""
    for name in ("PYTEST_CURRENT_TEST", "CI", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(pytester.path / "config"))
    project.data("small")
    project.data("hard", HARD)
    pytester.makepyfile(test_suite="""
        import pytest

        def classify(text):
            return {"category": "positive" if "good" in text else "negative"}

        @pytest.mark.promptflow(flow=classify, data=["data/small.jsonl", "data/hard.jsonl"])
        def test_one(flow_run):
            assert flow_run.metrics["error_rate"] == 0

        @pytest.mark.promptflow(flow=classify, data=["data/small.jsonl", "data/hard.jsonl"])
        def test_two(flow_run):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--promptflow-mlflow")
    assert outcomes(result) == {"passed": 4}
    runs = _runs(f"sqlite:///{(pytester.path / 'mlflow.db').as_posix()}")
    assert [r.info.run_name for r in runs] == ["classify-hard", "classify-small"]
    assert not (pytester.path / "config" / "mlflow").exists()  # no installation id, so no telemetry client


def test_a_store_that_fails_leaves_results_and_reports_alone(
        suite: Project, pytester: pytest.Pytester, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{(tmp_path / 'a_file' / 'mlflow.db').as_posix()}"
    result = run(pytester, "--promptflow-report", "out", "--promptflow-mlflow-uri", uri)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([f"promptflow: could not log to MLflow experiment pytest-promptflow at {uri}: *"])
    assert (pytester.path / "out" / "report.json").is_file()


def test_missing_mlflow_is_a_usage_error_naming_the_extra(
        suite: Project, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "mlflow_installed", lambda: False)
    result = run(pytester, "--promptflow-mlflow")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "MLflow tracking needs the 'mlflow' extra; fix: pip install 'pytest-promptflow[mlflow]'" in result.stderr.str()


@pytest.mark.parametrize(("name", "key"), [
    ("accuracy", "accuracy"), ("ev.f1_score", "ev.f1_score"), ("latency p95/all-rows", "latency p95/all-rows"),
    ("a:b", "a_b"), ("précision", "pr_cision"), ("x@y!", "x_y_"), ("a//b", "a__b"), ("/abs", "_abs"),
    ("../up", "_.._up"), ("a/./b", "a_._b"), ("", "_"), (".", "_."), ("x" * 300, "x" * 250),
    ("ev.match.pass@k", "ev.match.pass_at_k"), ("ev.match.pass^k", "ev.match.pass_hat_k"),
])
def test_mlflow_key_maps_what_mlflow_would_refuse(name: str, key: str) -> None:
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    assert mlflow_key(name) == key
    _validate_metric_name(key)
    _validate_param_name(key)


def test_mlflow_keys_stay_unique() -> None:
    assert mlflow_keys([("a:b", 1), ("a_b", 2), ("a?b", 3)]) == [("a_b", 1), ("a_b_2", 2), ("a_b_3", 3)]


def test_param_items_of_a_cell() -> None:
    cell = {"flow": "clf", "config": "classify=v1-temperature=0.7", "variants": {"z": "v0", "classify": "v1"},
            "overrides": {"nodes.classify.inputs.temperature": 0.7, "nodes.x.inputs.stop": ["\n"]},
            "dataset": "small", "dataset_hash": "ab" * 32}
    assert param_items(cell, {"git_commit": "f00d", "llm_mode": "live"}) == [
        ("flow", "clf"), ("config", "classify=v1-temperature=0.7"), ("variant.classify", "v1"), ("variant.z", "v0"),
        ("override.nodes.classify.inputs.temperature", "0.7"), ("override.nodes.x.inputs.stop", '["\\n"]'),
        ("dataset", "small"), ("dataset_hash", "ab" * 32), ("git_commit", "f00d"), ("build_id", ""),
        ("promptflow_env", ""), ("llm_mode", "live")]


def test_settings_place_the_store_and_its_artifacts(tmp_path: Path) -> None:
    relative = settings("sqlite:///stores/mlflow.db", "e", tmp_path)
    assert relative.uri == f"sqlite:///{tmp_path.as_posix()}/stores/mlflow.db"
    assert relative.artifact_location == (tmp_path / "stores" / "mlartifacts").as_uri()
    database = settings("postgresql://u:p@db/mlflow", "e", tmp_path)
    assert database.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert settings("http://127.0.0.1:5000", "e", tmp_path).artifact_location is None  # the server decides
    assert redact("postgresql://user:secret@db:5432/mlflow") == "postgresql://user:***@db:5432/mlflow"
    assert redact("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
