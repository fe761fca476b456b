"""Azure ML as the registry: data assets and models through azure-ai-ml's ``MLClient``.

As in the GenAIOps template, a dataset is a ``uri_file`` data asset tagged ``data_hash`` and a flow
is a ``custom_model`` tagged ``model_hash``; a new version is created only when the latest
version's tag differs. azure-ai-ml is imported inside the functions that need it (the ``azureml``
extra), so the plugin stays inert without it.

Concurrency: Azure offers no lock across machines here. ``lock()`` is a local file lock, which
serialises releases from one machine. Releases from different machines rely on Azure's own
version conflict: every create names its version explicitly (the latest number plus one), so a
second release racing for the same version with other content fails loudly (the SDK refuses to
change an existing version's path, and uploads are stored by content hash); one with the same
content writes the same version again, not a duplicate.

Rows (a release's per-row rows of the chosen configuration, one ``<dataset>.csv`` each) are versions of
a ``uri_file`` data asset ``<flow>-rows-<dataset>`` named after the flow version: ``3`` for flow v3, then
``3.1``, ``3.2`` when a later release reuses v3 (same flow content) with other rows, tagged
``flow_version`` and ``rows_hash``. Not inside the model's folder: a reused model version gets no
upload, and the rows (data, answers) have no place in what is deployed.

Release records are kept as versions of one small ``uri_file`` data asset (``RECORDS_ASSET``):
the whole JSON record is uploaded, and its scalar top-level fields are tags, so the workspace's
data page lists every release and each record can be downloaded whole.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from pytest_promptflow.errors import SpecError
from pytest_promptflow.extras import require
from pytest_promptflow.registry.base import Version
from pytest_promptflow.scrub import scrub, write_json

#: The environment variables the template reads for the workspace, in the order reported.
WORKSPACE_VARIABLES = ("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "WORKSPACE_NAME")
#: The data asset whose versions are the release records.
RECORDS_ASSET = "pytest-promptflow-releases"


class AzureMLRegistry:
    """The :class:`~pytest_promptflow.registry.base.Registry` of an Azure ML workspace."""

    def __init__(self, ml_client: Any, lock_file: Path | None = None) -> None:
        self.ml_client = ml_client
        self.lock_file = lock_file or _default_lock_file(ml_client)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None,
                         settings: Mapping[str, str] | None = None) -> AzureMLRegistry:
        """The workspace named by ``settings`` (keys in lower case, from config) or else ``environ``.

        Authenticates with ``DefaultAzureCredential`` (environment, managed identity, Azure CLI...).
        """
        return cls(workspace_client("azureml registry", "to register in", environ, settings))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """A lock for releases from this machine; see the module docstring for other machines."""
        from filelock import FileLock

        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_file)):
            yield

    def register_dataset(self, name: str, path: Path, content_hash: str) -> Version:
        """A data asset version holding ``path``, unless the latest one is tagged ``data_hash=content_hash``."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        return self._register(
            self.ml_client.data, name, content_hash, "data_hash",
            lambda version: Data(path=str(path), type=AssetTypes.URI_FOLDER if path.is_dir() else AssetTypes.URI_FILE,
                                 name=name, version=version, tags={"data_hash": content_hash},
                                 description="Registered by pytest-promptflow"))

    def register_flow(self, name: str, folder: Path, content_hash: str, tags: Mapping[str, str]) -> Version:
        """A model version of ``folder``, unless the latest one is tagged ``model_hash=content_hash``."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        all_tags = {**{key: str(value) for key, value in tags.items()}, "model_hash": content_hash}
        return self._register(
            self.ml_client.models, name, content_hash, "model_hash",
            lambda version: Model(path=str(folder), type=AssetTypes.CUSTOM_MODEL, name=name, version=version,
                                  tags=all_tags, description="Prompt flow registered by pytest-promptflow"))

    def register_rows(self, flow: str, version: str, rows: Mapping[str, Path]) -> None:
        """A version of ``<flow>-rows-<dataset>`` per rows file, unless the latest one for ``version`` has its hash."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        operations = self.ml_client.data
        for dataset, path in rows.items():
            name, content_hash = rows_asset(flow, dataset), hashlib.sha256(path.read_bytes()).hexdigest()
            latest = _latest_rows(_versions(operations, name), version)
            kept = {} if latest is None else operations.get(name, version=latest).tags or {}
            if kept.get("rows_hash") == content_hash:
                continue
            number = version if latest is None else f"{version}.{_rows_suffix(latest, version) + 1}"
            _create(operations, Data(path=str(path), type=AssetTypes.URI_FILE, name=name, version=number,
                                     tags={"flow": flow, "flow_version": version, "dataset": dataset,
                                           "rows_hash": content_hash},
                                     description=f"Per-row rows of {flow} v{version} on {dataset}, kept by "
                                                 "pytest-promptflow for paired baselines"))

    def released_rows(self, flow: str, dataset: str) -> Path | None:
        version = _latest(_versions(self.ml_client.models, flow))
        if version is None:
            return None
        name = rows_asset(flow, dataset)
        latest = _latest_rows(_versions(self.ml_client.data, name), version)
        if latest is None:
            return None
        asset = self.ml_client.data.get(name, version=latest)
        return _download(self.ml_client, str(asset.path), Path(tempfile.mkdtemp(prefix="pytest-promptflow-rows-")))

    def record_release(self, record: Mapping[str, Any]) -> None:
        """A new version of the ``RECORDS_ASSET`` data asset: the record as a JSON file, its scalars as tags."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Data

        operations = self.ml_client.data
        version = _next_version(_versions(operations, RECORDS_ASSET))
        tags = scrub({key: str(value) for key, value in record.items() if isinstance(value, (str, int, float, bool))})
        with tempfile.TemporaryDirectory(prefix="pytest-promptflow-") as folder:
            path = Path(folder) / "release.json"
            write_json(path, record, indent=2, sort_keys=True, default=str)
            data = Data(path=str(path), type=AssetTypes.URI_FILE, name=RECORDS_ASSET, version=version, tags=tags,
                        description="A pytest-promptflow release record")
            _create(operations, data)

    def _register(self, operations: Any, name: str, content_hash: str, tag: str, entity: Any) -> Version:
        versions = _versions(operations, name)
        latest = _latest(versions)
        if latest is not None:
            current = operations.get(name, version=latest)
            if (current.tags or {}).get(tag) == content_hash:
                return Version(name, str(current.version), content_hash, created=False)
        created = _create(operations, entity(_next_version(versions)))
        return Version(name, str(created.version), content_hash, created=True)


def rows_asset(flow: str, dataset: str) -> str:
    """The data asset holding ``flow``'s released rows on ``dataset``."""
    return f"{flow}-rows-{dataset}"


def _rows_suffix(asset_version: str, flow_version: str) -> int:
    """0 for the rows asset version ``3`` of flow v3, k for ``3.k``; -1 for another flow version's."""
    if asset_version == flow_version:
        return 0
    suffix = asset_version.removeprefix(f"{flow_version}.")
    return int(suffix) if suffix != asset_version and suffix.isdigit() else -1


def _latest_rows(versions: Iterable[str], flow_version: str) -> str | None:
    """The latest rows asset version kept with ``flow_version``, or None."""
    mine = [v for v in versions if _rows_suffix(v, flow_version) >= 0]
    return max(mine, key=lambda v: _rows_suffix(v, flow_version), default=None)


def _download(ml_client: Any, uri: str, folder: Path) -> Path | None:
    """The file of a ``uri_file`` data asset, downloaded into ``folder``. azure-ai-ml has no public download of
    a data asset; this uses its private artifact helper (``_artifacts._artifact_utilities``, as its model
    download does), the one place here that a change of that private API would break."""
    from azure.ai.ml._artifacts._artifact_utilities import download_artifact_from_aml_uri  # private API

    download_artifact_from_aml_uri(uri, str(folder), ml_client.datastores)
    return next((path for path in sorted(folder.rglob("*")) if path.is_file()), None)


def _versions(operations: Any, name: str) -> list[str]:
    """The version strings of asset ``name``; none when Azure knows no such asset."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [str(asset.version) for asset in operations.list(name=name)]
    except ResourceNotFoundError:
        return []


def _latest(versions: Iterable[str]) -> str | None:
    """The highest version: numbers compare as numbers, and come after any other version string."""
    ordered = sorted(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))
    return ordered[-1] if ordered else None


def _next_version(versions: Iterable[str]) -> str:
    """One more than the highest numeric version, explicit so that a racing create conflicts."""
    return str(max((int(v) for v in versions if v.isdigit()), default=0) + 1)


def _create(operations: Any, entity: Any) -> Any:
    """``create_or_update``, with a version conflict said in one line."""
    from azure.ai.ml.exceptions import AssetPathException
    from azure.core.exceptions import ResourceExistsError

    try:
        return operations.create_or_update(entity)
    except (AssetPathException, ResourceExistsError) as error:
        raise RuntimeError(f"azureml registry: {entity.name} version {entity.version} was created with other "
                           f"content by another release at the same time; run the release again") from error


def _default_lock_file(ml_client: Any) -> Path:
    """One lock per workspace in the temp folder, so two projects on a machine share it."""
    workspace = "/".join(str(getattr(ml_client, attribute, "")) for attribute in
                         ("subscription_id", "resource_group_name", "workspace_name"))
    key = hashlib.sha256(workspace.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"pytest-promptflow-azureml-{key}.lock"


def workspace_client(who: str, purpose: str, environ: Mapping[str, str] | None = None,
                     settings: Mapping[str, str] | None = None) -> Any:
    """An ``MLClient`` for the workspace named by ``settings`` (keys in lower case) or else ``environ``;
    a missing variable or SDK is one line starting with ``who``."""
    environ = os.environ if environ is None else environ
    settings = settings or {}
    values = {var: settings.get(var.lower()) or environ.get(var, "") for var in WORKSPACE_VARIABLES}
    missing = [var for var, value in values.items() if not value]
    if missing:
        raise SpecError(None, f"{who}: {', '.join(missing)} not set",
                        "set " + ", ".join(WORKSPACE_VARIABLES) + f" to the Azure ML workspace {purpose}")
    require("azureml", who)
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), values["SUBSCRIPTION_ID"], values["RESOURCE_GROUP_NAME"],
                    values["WORKSPACE_NAME"], show_progress=False)
