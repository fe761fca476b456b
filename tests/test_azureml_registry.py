"""The Azure ML registry, against ``FakeMLClient`` at the SDK boundary (this machine cannot reach Azure).

The entities our code builds are azure-ai-ml's real ``Data`` and ``Model`` objects; only the
operations that would talk to the workspace are faked.
"""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is the 'azureml' extra (in 'dev')")

from azure.ai.ml.exceptions import AssetPathException  # noqa: E402
from azure.core.exceptions import ResourceNotFoundError  # noqa: E402
from filelock import FileLock, Timeout  # noqa: E402

from pytest_promptflow.errors import SpecError  # noqa: E402
from pytest_promptflow.registry.azureml import RECORDS_ASSET, AzureMLRegistry  # noqa: E402
from pytest_promptflow.registry.base import Registry, Version  # noqa: E402


def _fingerprint(path: Path) -> str:
    """What the SDK's upload path is keyed on: the content, not where it lies."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class FakeOperations:
    """``ml_client.data`` or ``ml_client.models`` of a fake workspace: ``list``, ``get``, ``create_or_update``.

    Like the SDK: versions are immutable in content (re-creating one with other content raises
    ``AssetPathException``, with the same content it updates the metadata), ``get`` of an unknown
    version raises ``ResourceNotFoundError``, and what is returned are copies of the stored entities.
    """

    def __init__(self) -> None:
        self.assets: dict[tuple[str, str], Any] = {}
        self.uploads: dict[tuple[str, str], bytes] = {}
        self.creates: list[tuple[str, str]] = []

    def list(self, name: str | None = None, **_: Any) -> list[Any]:
        return [copy.deepcopy(asset) for (n, _v), asset in self.assets.items() if name in (None, n)]

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Any:
        if label == "latest":
            versions = [v for (n, v) in self.assets if n == name]
            version = max(versions, key=lambda v: int(v) if v.isdigit() else -1) if versions else None
        if (name, str(version)) not in self.assets:
            raise ResourceNotFoundError(f"{name}:{version} not found")
        return copy.deepcopy(self.assets[(name, str(version))])

    def create_or_update(self, entity: Any) -> Any:
        key = (entity.name, str(entity.version))
        local = Path(entity.path)
        stored = copy.deepcopy(entity)
        stored.path = f"azureml://datastores/workspaceblobstore/paths/LocalUpload/{_fingerprint(local)}/{local.name}"
        if key in self.assets and self.assets[key].path != stored.path:
            raise AssetPathException("the asset path of an existing version cannot change",
                                     "the asset path of an existing version cannot change")
        self.creates.append(key)
        self.assets[key] = stored
        if local.is_file():
            self.uploads[key] = local.read_bytes()
        return copy.deepcopy(stored)


class FakeMLClient:
    """A fake standing in for Azure ML's ``MLClient`` (no Azure here): a workspace kept in memory."""

    def __init__(self, subscription_id: str = "sub", resource_group_name: str = "rg", workspace_name: str = "ws"):
        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        self.data = FakeOperations()
        self.models = FakeOperations()
        self.datastores = "fake datastore operations"  # only handed to the SDK's download helper (faked below)


@pytest.fixture
def fake_download(client: FakeMLClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """azure-ai-ml's (private) download of an ``azureml://`` path, answered from the fake workspace's uploads;
    returns the URIs asked for."""
    from azure.ai.ml._artifacts import _artifact_utilities

    asked: list[str] = []

    def download_artifact_from_aml_uri(uri: str, destination: str, datastore_operation: Any) -> str:
        assert datastore_operation is client.datastores
        asked.append(uri)
        key = next(key for key, asset in client.data.assets.items() if asset.path == uri)
        target = Path(destination) / "LocalUpload" / uri.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True)
        target.write_bytes(client.data.uploads[key])
        return destination

    monkeypatch.setattr(_artifact_utilities, "download_artifact_from_aml_uri", download_artifact_from_aml_uri)
    return asked


@pytest.fixture
def client() -> FakeMLClient:
    return FakeMLClient()


@pytest.fixture
def registry(client: FakeMLClient, tmp_path: Path) -> AzureMLRegistry:
    return AzureMLRegistry(client, lock_file=tmp_path / "azureml.lock")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "sentiment.jsonl"
    path.write_text('{"text": "a good day", "label": "positive"}\n', encoding="utf-8")
    return path


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    folder = tmp_path / "sentiment"
    folder.mkdir()
    (folder / "flow.dag.yaml").write_text("nodes: []\n", encoding="utf-8")
    return folder


def test_is_a_registry(registry: AzureMLRegistry) -> None:
    assert isinstance(registry, AzureMLRegistry)
    as_protocol: Registry = registry  # what release.py holds; mypy checks the module itself
    assert callable(as_protocol.register_dataset)


def test_first_registration_creates_version_1_with_tags(
        registry: AzureMLRegistry, client: FakeMLClient, dataset: Path, flow: Path) -> None:
    data_version = registry.register_dataset("sentiment", dataset, "h1")
    flow_version = registry.register_flow("sentiment-flow", flow, "m1", {"accuracy": "0.75", "git_commit": "abc"})

    assert data_version == Version("sentiment", "1", "h1", created=True)
    assert flow_version == Version("sentiment-flow", "1", "m1", created=True)
    data = client.data.get("sentiment", version="1")
    assert type(data).__name__ == "Data" and data.type == "uri_file" and data.tags == {"data_hash": "h1"}
    assert client.data.uploads[("sentiment", "1")] == dataset.read_bytes()
    model = client.models.get("sentiment-flow", version="1")
    assert type(model).__name__ == "Model" and model.type == "custom_model"
    assert model.tags == {"model_hash": "m1", "accuracy": "0.75", "git_commit": "abc"}


def test_unchanged_content_is_reused_without_a_create(
        registry: AzureMLRegistry, client: FakeMLClient, dataset: Path, flow: Path) -> None:
    registry.register_dataset("sentiment", dataset, "h1")
    registry.register_flow("sentiment-flow", flow, "m1", {})

    assert registry.register_dataset("sentiment", dataset, "h1") == Version("sentiment", "1", "h1", created=False)
    assert registry.register_flow("sentiment-flow", flow, "m1", {"accuracy": "0.9"}) == Version(
        "sentiment-flow", "1", "m1", created=False)
    assert client.data.creates == [("sentiment", "1")]
    assert client.models.creates == [("sentiment-flow", "1")]


def test_changed_hash_creates_the_next_version(
        registry: AzureMLRegistry, client: FakeMLClient, dataset: Path, flow: Path) -> None:
    registry.register_dataset("sentiment", dataset, "h1")
    dataset.write_text('{"text": "a bad day", "label": "negative"}\n', encoding="utf-8")
    assert registry.register_dataset("sentiment", dataset, "h2") == Version("sentiment", "2", "h2", created=True)
    assert client.data.get("sentiment", version="2").tags == {"data_hash": "h2"}

    registry.register_flow("sentiment-flow", flow, "m1", {})
    (flow / "classify.jinja2").write_text("Classify: {{text}}\n", encoding="utf-8")
    assert registry.register_flow("sentiment-flow", flow, "m2", {}).version == "2"
    # only the latest version counts: going back to v1's content is a new version again
    assert registry.register_flow("sentiment-flow", flow, "m1", {}).version == "3"


def test_next_version_follows_the_highest_number(
        registry: AzureMLRegistry, client: FakeMLClient, dataset: Path) -> None:
    from azure.ai.ml.entities import Data

    for version, content_hash in [("1", "a"), ("10", "b"), ("2", "c"), ("manual", "d")]:
        client.data.assets[("sentiment", version)] = Data(
            name="sentiment", version=version, path=f"LocalUpload/{version}", type="uri_file",
            tags={"data_hash": content_hash})

    assert registry.register_dataset("sentiment", dataset, "b") == Version("sentiment", "10", "b", created=False)
    assert registry.register_dataset("sentiment", dataset, "e").version == "11"


def test_a_race_from_another_machine_fails_loudly_instead_of_duplicating(
        registry: AzureMLRegistry, client: FakeMLClient, dataset: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry.register_dataset("sentiment", dataset, "h1")
    seen = client.data.list(name="sentiment")  # both machines list v1 ...
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "other", "label": "negative"}\n', encoding="utf-8")
    AzureMLRegistry(client, lock_file=tmp_path / "b.lock").register_dataset("sentiment", other, "h2")  # ... B wins
    monkeypatch.setattr(client.data, "list", lambda name=None, **_: seen)  # A still sees only v1
    monkeypatch.setattr(client.data, "get", lambda name, version=None, label=None: seen[0])

    dataset.write_text('{"text": "mine", "label": "positive"}\n', encoding="utf-8")
    with pytest.raises(RuntimeError, match="sentiment version 2 was created with other content by another release"):
        registry.register_dataset("sentiment", dataset, "h3")
    assert client.data.uploads[("sentiment", "2")] == other.read_bytes()

    # the same content racing for the same version writes that version again: still one v2
    assert registry.register_dataset("sentiment", other, "h2").version == "2"
    assert sorted(v for (_n, v) in client.data.assets) == ["1", "2"]


def test_the_release_record_is_a_version_of_one_data_asset(registry: AzureMLRegistry, client: FakeMLClient) -> None:
    record = {"flow": "sentiment", "release": "sentiment-0123456789ab", "metrics": {"accuracy": 0.75}}
    registry.record_release(record)
    registry.record_release({**record, "release": "sentiment-ba9876543210"})

    first = client.data.get(RECORDS_ASSET, version="1")
    assert first.type == "uri_file" and first.tags == {"flow": "sentiment", "release": "sentiment-0123456789ab"}
    assert json.loads(client.data.uploads[(RECORDS_ASSET, "1")]) == record
    assert client.data.get(RECORDS_ASSET, version="2").tags["release"] == "sentiment-ba9876543210"


def test_lock_holds_off_a_second_release_on_this_machine(registry: AzureMLRegistry) -> None:
    with registry.lock():
        with pytest.raises(Timeout):
            FileLock(str(registry.lock_file), timeout=0).acquire()
    with FileLock(str(registry.lock_file), timeout=0):
        pass


def test_the_default_lock_is_one_per_workspace() -> None:
    assert AzureMLRegistry(FakeMLClient()).lock_file == AzureMLRegistry(FakeMLClient()).lock_file
    assert AzureMLRegistry(FakeMLClient(workspace_name="other")).lock_file != AzureMLRegistry(FakeMLClient()).lock_file


def test_from_environment_names_the_missing_variable_in_one_line() -> None:
    with pytest.raises(SpecError) as raised:
        AzureMLRegistry.from_environment({"SUBSCRIPTION_ID": "sub", "RESOURCE_GROUP_NAME": "rg"})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("azureml registry: WORKSPACE_NAME not set; set SUBSCRIPTION_ID, ")


def test_from_environment_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)  # as if azure-ai-ml were not installed
    with pytest.raises(SpecError, match=r"needs the 'azureml' extra \(azure.ai.ml is not installed\); fix: pip install "
                                        r"'pytest-promptflow\[azureml\]'"):
        AzureMLRegistry.from_environment({"SUBSCRIPTION_ID": "s", "RESOURCE_GROUP_NAME": "r", "WORKSPACE_NAME": "w"})


def test_from_environment_builds_a_client_for_the_workspace() -> None:
    """MLClient and DefaultAzureCredential are built offline; nothing here contacts Azure."""
    registry = AzureMLRegistry.from_environment(
        {"SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000", "RESOURCE_GROUP_NAME": "rg",
         "WORKSPACE_NAME": "from-env"}, settings={"workspace_name": "from-config"})
    client = registry.ml_client
    assert type(client).__name__ == "MLClient"
    assert (client.resource_group_name, client.workspace_name) == ("rg", "from-config")


def test_importing_the_registry_imports_no_azure() -> None:
    code = ("import sys, pytest_promptflow.registry.azureml, pytest_promptflow.approvals, pytest_promptflow.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('azure')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rows_are_a_data_asset_per_dataset_versioned_with_the_flow(
        registry: AzureMLRegistry, client: FakeMLClient, flow: Path, tmp_path: Path, fake_download: list[str]) -> None:
    rows = tmp_path / "small.csv"
    rows.write_text("flow,id,ev.score\nclf,r0,1\n", encoding="utf-8")
    assert registry.released_rows("clf", "small") is None  # no flow version yet
    registry.register_flow("clf", flow, "m1", {})
    assert registry.released_rows("clf", "small") is None  # a version without rows
    registry.register_rows("clf", "1", {"small": rows})
    asset = client.data.get("clf-rows-small", version="1")
    assert asset.type == "uri_file" and asset.tags["flow_version"] == "1" and asset.tags["dataset"] == "small"

    kept = registry.released_rows("clf", "small")
    assert kept is not None and kept.read_bytes() == rows.read_bytes() and fake_download == [asset.path]
    assert registry.released_rows("clf", "hard") is None

    registry.register_rows("clf", "1", {"small": rows})  # the same rows again: nothing new
    rows.write_text("flow,id,ev.score\nclf,r0,0\n", encoding="utf-8")
    registry.register_rows("clf", "1", {"small": rows})  # flow v1 reused with other rows: 1.1
    assert client.data.creates == [("clf-rows-small", "1"), ("clf-rows-small", "1.1")]
    assert registry.released_rows("clf", "small").read_bytes() == rows.read_bytes()  # type: ignore[union-attr]

    (flow / "classify.jinja2").write_text("Classify: {{text}}\n", encoding="utf-8")
    registry.register_flow("clf", flow, "m2", {})
    assert registry.released_rows("clf", "small") is None  # v2 has no rows yet: v1's are not v2's
    registry.register_rows("clf", "2", {"small": rows})
    assert ("clf-rows-small", "2") in client.data.creates
