"""The MLflow registry on a fresh SQLite store: a version only when the content changed, flows that load
back with MLflow and answer like the flow, one version when two releases race, and no store created
by reading it."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import ALWAYS_PY, HARD, SMALL, jsonl
from test_packaging import write_dag_flow

from pytest_promptflow.flows import load_target
from pytest_promptflow.packaging import package_flow
from pytest_promptflow.registry.base import Version
from pytest_promptflow.registry.mlflow_registry import DATASETS, RELEASES, MlflowRegistry

# MLflow turns its usage telemetry on when imported outside a test or CI: keep it off here, too.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
mlflow = pytest.importorskip("mlflow", reason="MLflow is the 'mlflow' extra (in 'dev')")

CHOSEN = {"classify": "variant_0"}
UPPER = {"nodes.decorate.inputs.upper": True}


def registry_at(folder: Path) -> MlflowRegistry:
    return MlflowRegistry(f"sqlite:///{(folder / 'mlflow.db').as_posix()}", folder / "mlartifacts")


def mlflow_client(registry: MlflowRegistry) -> Any:
    """MLflow's own client on the registry's store, to read back what it wrote."""
    with warnings.catch_warnings():  # SQLAlchemy's deprecation notes on MLflow's models, when it maps them
        warnings.simplefilter("ignore", DeprecationWarning)
        return mlflow.MlflowClient(tracking_uri=registry.tracking_uri)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def registry(tmp_path: Path) -> MlflowRegistry:
    return registry_at(tmp_path)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    return write_dag_flow(tmp_path / "flows" / "clf")


def package(flow: Path, dest: Path) -> tuple[Path, str]:
    return package_flow(load_target(flow, flow.parent), CHOSEN, UPPER, dest)


def test_a_dataset_gets_a_new_version_only_when_its_content_changes(registry: MlflowRegistry, tmp_path: Path):
    small, hard = tmp_path / "small.jsonl", tmp_path / "hard.jsonl"
    small.write_text(jsonl(SMALL), encoding="utf-8")
    hard.write_text(jsonl(HARD), encoding="utf-8")

    first = [registry.register_dataset("small", small, sha256(small)),
             registry.register_dataset("hard", hard, sha256(hard))]
    database = (tmp_path / "mlflow.db").read_bytes()
    again = [registry.register_dataset("small", small, sha256(small)),
             registry.register_dataset("hard", hard, sha256(hard))]
    unchanged_store = (tmp_path / "mlflow.db").read_bytes() == database
    small.write_text(jsonl([{**SMALL[0], "label": "negative"}, *SMALL[1:]]), encoding="utf-8")
    changed = [registry.register_dataset("small", small, sha256(small)),
               registry.register_dataset("hard", hard, sha256(hard))]

    assert [(v.version, v.created) for v in first] == [("1", True), ("1", True)]
    assert again == [Version(v.name, v.version, v.content_hash, created=False) for v in first]
    assert unchanged_store
    assert [(v.name, v.version, v.created) for v in changed] == [("small", "2", True), ("hard", "1", False)]
    assert registry.latest_dataset("small") == Version("small", "2", sha256(small), created=False)
    client = mlflow_client(registry)
    runs = client.search_runs([client.get_experiment_by_name(DATASETS).experiment_id],
                              "tags.dataset = 'small'", order_by=["tags.version"])
    assert [(r.data.tags["version"], r.data.tags["data_hash"]) for r in runs] == [
        ("1", first[0].content_hash), ("2", sha256(small))]
    kept = Path(client.download_artifacts(runs[1].info.run_id, "data/small.jsonl", str(tmp_path / "dl")))
    assert kept.read_bytes() == small.read_bytes()


def test_a_flow_gets_a_new_model_version_only_when_its_package_changes(
        registry: MlflowRegistry, flow: Path, tmp_path: Path):
    tags = {"cell": "clf-classify=variant_0-upper=True-small", "metric.accuracy": "1.0"}

    first = registry.register_flow("clf", *package(flow, tmp_path / "one"), tags)
    same = registry.register_flow("clf", *package(flow, tmp_path / "two"), tags)
    (flow / "classify.py").write_text((flow / "classify.py").read_text().replace('"good"', '"great"'))
    edited = registry.register_flow("clf", *package(flow, tmp_path / "three"), tags)
    (flow / "always.py").write_text(ALWAYS_PY.replace('"positive"', '"neutral"'))  # a variant not released

    assert (first.version, first.created) == ("1", True)
    assert same == Version("clf", "1", first.content_hash, created=False)
    assert (edited.version, edited.created) == ("2", True) and edited.content_hash != first.content_hash
    assert registry.latest_flow("clf") == Version("clf", "2", edited.content_hash, created=False)
    client = mlflow_client(registry)
    version = client.get_model_version("clf", "2")
    assert version.tags == {**tags, "model_hash": edited.content_hash}


def test_the_registered_flow_loads_back_with_mlflow_and_answers_like_the_flow(
        registry: MlflowRegistry, flow: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        _promptflow_loaded: None):
    import pandas as pd

    registered = registry.register_flow("clf", *package(flow, tmp_path / "pkg"), {})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", registry.tracking_uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    model = mlflow.pyfunc.load_model(f"models:/clf/{registered.version}")
    answers = model.predict(pd.DataFrame(SMALL))  # with the label column, which is no flow input

    direct = load_target(flow, flow.parent).executor(CHOSEN, UPPER, {})
    expected = [direct({"text": row["text"]}).outputs for row in SMALL]
    assert answers.to_dict(orient="records") == expected
    assert expected[:2] == [{"category": "POSITIVE"}, {"category": "NEGATIVE"}]
    assert model.predict([{"text": "good"}]) == [{"category": "POSITIVE"}]


def _release_in_child(uri: str, artifacts: str, folder: str, content_hash: str, data: str,
                      barrier: Any, results: Any) -> None:
    """One of two releases started at once: both wait at the barrier, then register under the lock."""
    registry = MlflowRegistry(uri, Path(artifacts))
    import mlflow.pyfunc  # noqa: F401  # the import is slow: take it before the start line

    barrier.wait()
    with registry.lock():
        dataset = registry.register_dataset("small", Path(data), sha256(Path(data)))
        model = registry.register_flow("clf", Path(folder), content_hash, {})
    results.put((dataset.version, dataset.created, model.version, model.created))


def test_two_releases_at_once_create_one_version(registry: MlflowRegistry, flow: Path, tmp_path: Path):
    folder, content_hash = package(flow, tmp_path / "pkg")
    data = tmp_path / "small.jsonl"
    data.write_text(jsonl(SMALL), encoding="utf-8")
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(2), spawn.Queue()
    args = (registry.tracking_uri, str(registry.artifacts_dir), str(folder), content_hash, str(data), barrier, results)
    children = [spawn.Process(target=_release_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=240)

    assert [child.exitcode for child in children] == [0, 0]
    outcomes = sorted(results.get(timeout=10) for _ in children)
    assert outcomes == [("1", False, "1", False), ("1", True, "1", True)]
    client = mlflow_client(registry)
    assert [v.version for v in client.search_model_versions("name = 'clf'")] == [1]
    assert len(client.search_runs([client.get_experiment_by_name(DATASETS).experiment_id])) == 1


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Path):
    registry = registry_at(tmp_path)

    assert registry.latest_dataset("small") is None
    assert registry.latest_flow("clf") is None
    assert list(tmp_path.iterdir()) == []


def test_the_release_record_is_kept_as_a_run_with_its_json(registry: MlflowRegistry, tmp_path: Path):
    record = {"flow": "clf", "decision": "released", "versions": {"clf": "1"}, "reason": "all thresholds passed"}

    registry.record_release(record)

    client = mlflow_client(registry)
    [run] = client.search_runs([client.get_experiment_by_name(RELEASES).experiment_id])
    assert (run.info.run_name, run.data.tags["flow"], run.data.tags["decision"]) == ("clf released", "clf", "released")
    kept = Path(client.download_artifacts(run.info.run_id, "release.json", str(tmp_path / "dl")))
    assert json.loads(kept.read_text()) == record
