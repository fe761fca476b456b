"""The local registry: MLflow's model registry and runs, in the tracking store (a SQLite file by default).

- Datasets: MLflow has no versioned data assets (its ``mlflow.data`` datasets are inputs of runs,
  not registered things), so each dataset version is one finished run in the experiment
  ``pytest-promptflow-datasets``, tagged ``dataset``, ``version`` and ``data_hash``, with the file as
  its artifact under ``data/``; a new version is 1 + the highest ever recorded. Runs rather than a
  registered model per dataset: the Models page then lists only things that load with
  ``mlflow.pyfunc`` and answer rows, and a search (``tags.dataset = 'sentiment'``) lists a
  dataset's versions in ``mlflow ui``.
- Flows: one registered model per flow; each version is a pyfunc model (``mlflow_model.py``, stored
  as code, nothing pickled) over the packaged flow folder, logged by a run in
  ``pytest-promptflow-flows`` and tagged ``model_hash`` plus the release's tags.
- Rows: each release's per-row rows of the chosen configuration, one run in ``pytest-promptflow-rows``
  (tags ``flow``, ``version``) with the files ``rows/<dataset>.csv``; the model version's tag
  ``rows_run`` names the latest such run. A separate run rather than the model's own: a flow whose
  content did not change reuses its model version, but its rows (new data, new answers) are new.
- Releases: one run per record in ``pytest-promptflow-releases`` (tags ``flow``, ``decision``,
  ``release`` when the record has them), the record as its artifact ``release.json``.

Nothing is written until a registration needs it. Constructing MLflow's client creates the SQLite
file, so reading a store that does not exist answers "nothing registered" without MLflow. MLflow is
imported only inside the methods, quietly and with its telemetry off (``reporting.tracking``).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import unquote

from ..errors import SpecError, Where
from ..extras import require
from ..reporting.tracking import mlflow_keys
from ..scrub import scrub, scrub_text
from .base import Version

DATASETS = "pytest-promptflow-datasets"
FLOWS = "pytest-promptflow-flows"
RELEASES = "pytest-promptflow-releases"
ROWS = "pytest-promptflow-rows"
ROWS_TAG = "rows_run"  # on a model version: the run holding its rows
ROWS_FOLDER = "rows"
MODEL_PATH = "model"
FLOW_ARTIFACT = "flow"  # the packaged flow's name among the model's artifacts
LOCK_TIMEOUT = 600.0  # seconds a release waits for another one on the same store
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class MlflowRegistry:
    """Datasets, flows and release records in the MLflow store at ``tracking_uri``; artifacts of the
    experiments it creates go to ``artifacts_dir`` (``<rootdir>/mlartifacts`` like the tracked runs')."""

    def __init__(self, tracking_uri: str, artifacts_dir: Path, lock_timeout: float = LOCK_TIMEOUT) -> None:
        require("mlflow", "the MLflow registry (--promptflow-registry mlflow)")
        self.tracking_uri = tracking_uri
        self.artifacts_dir = Path(artifacts_dir).absolute()
        self.lock_timeout = lock_timeout
        self.database = sqlite_file(tracking_uri)
        base = self.database if self.database is not None else self.artifacts_dir.parent / "mlflow-registry"
        self.lock_path = base.with_name(base.name + ".lock")
        self._file_lock: Any = None
        self._mlflow: Any = None

    # -- the Registry protocol --
    @contextmanager
    def lock(self) -> Iterator[None]:
        """A file lock beside the SQLite file (re-entrant in this thread), so concurrent releases on
        this machine take turns; for a database server, beside the artifacts folder."""
        from filelock import FileLock, Timeout

        if self._file_lock is None:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(str(self.lock_path))
        try:
            self._file_lock.acquire(timeout=self.lock_timeout)
        except Timeout:
            raise SpecError(Where(self.lock_path), f"another release has held the registry lock for "
                            f"{self.lock_timeout:.0f} s", "let it finish, then release again") from None
        try:
            yield
        finally:
            self._file_lock.release()

    def register_dataset(self, name: str, path: Path, content_hash: str) -> Version:
        with self.lock(), _quietly():
            latest, highest = self._dataset_runs(name)
            if latest is not None and latest.data.tags.get("data_hash") == content_hash:
                return Version(name, latest.data.tags["version"], content_hash, created=False)
            number = str(highest + 1)
            tags = {"dataset": name, "version": number, "data_hash": content_hash, "source": Path(path).name}
            with self._run(DATASETS, f"{name} v{number}", tags) as run_id:
                self.client.log_artifact(run_id, str(path), artifact_path="data")
            return Version(name, number, content_hash, created=True)

    def register_flow(self, name: str, folder: Path, content_hash: str, tags: Mapping[str, str]) -> Version:
        with self.lock(), _quietly():
            latest = self._latest_model_version(name)
            if latest is not None and latest.tags.get("model_hash") == content_hash:
                return Version(name, str(latest.version), content_hash, created=False)
            named = mlflow_keys((key, str(value)) for key, value in tags.items())  # e.g. an evaluator "<lambda>"
            all_tags = scrub({**dict(named), "model_hash": content_hash})
            with self._run(FLOWS, f"{name} {content_hash[:12]}", {"flow": name, **all_tags}) as run_id:
                with tempfile.TemporaryDirectory(prefix="pytest-promptflow-model-") as temporary:
                    save_flow_model(Path(folder), Path(temporary) / MODEL_PATH)
                    self.client.log_artifacts(run_id, str(Path(temporary) / MODEL_PATH), MODEL_PATH)
            self._ensure_registered_model(name)
            created = self.client.create_model_version(
                name, source=f"runs:/{run_id}/{MODEL_PATH}", run_id=run_id, tags=all_tags,
                description=f"promptflow flow {name} as released by pytest-promptflow (content {content_hash[:12]})")
            return Version(name, str(created.version), content_hash, created=True)

    def register_rows(self, flow: str, version: str, rows: Mapping[str, Path]) -> None:
        with self.lock(), _quietly():
            tags = {"flow": flow, "version": version, "datasets": ",".join(sorted(rows))}
            with self._run(ROWS, f"{flow} v{version} rows", tags) as run_id:
                for path in rows.values():
                    self.client.log_artifact(run_id, str(path), artifact_path=ROWS_FOLDER)
            self.client.set_model_version_tag(flow, version, ROWS_TAG, run_id)

    def released_rows(self, flow: str, dataset: str) -> Path | None:
        if not self.exists:
            return None
        with _quietly():
            latest = self._latest_model_version(flow)
            run_id = (latest.tags or {}).get(ROWS_TAG) if latest is not None else None
            if not run_id:
                return None
            name = f"{dataset}.csv"
            if name not in {Path(found.path).name for found in self.client.list_artifacts(run_id, ROWS_FOLDER)}:
                return None
            folder = tempfile.mkdtemp(prefix="pytest-promptflow-rows-")
            return Path(self.client.download_artifacts(run_id, f"{ROWS_FOLDER}/{name}", folder))

    def record_release(self, record: Mapping[str, Any]) -> None:
        tags = {key: record[key] for key in ("flow", "decision", "release") if isinstance(record.get(key), str)}
        run_name = " ".join(tags[key] for key in ("flow", "decision") if key in tags) or "release"
        text = scrub_text(json.dumps(scrub(record), indent=2, sort_keys=True, default=str) + "\n")
        with self.lock(), _quietly(), self._run(RELEASES, run_name, tags) as run_id:
            self.client.log_text(run_id, text, "release.json")

    # -- reads that never create the store --
    def latest_dataset(self, name: str) -> Version | None:
        """The dataset's latest registered version, or None (also when the store does not exist)."""
        if not self.exists:
            return None
        with _quietly():
            latest, _ = self._dataset_runs(name)
        if latest is None:
            return None
        return Version(name, latest.data.tags["version"], latest.data.tags.get("data_hash", ""), created=False)

    def latest_flow(self, name: str) -> Version | None:
        """The flow's latest registered model version, or None (also when the store does not exist)."""
        if not self.exists:
            return None
        with _quietly():
            latest = self._latest_model_version(name)
        if latest is None:
            return None
        return Version(name, str(latest.version), latest.tags.get("model_hash", ""), created=False)

    # -- MLflow --
    @property
    def exists(self) -> bool:
        """Whether the store is there to read (a database server is assumed to be)."""
        return self.database is None or self.database.is_file()

    @property
    def client(self) -> Any:
        """MLflow's client (created on first use: this creates the SQLite file)."""
        if self._mlflow is None:
            from mlflow import MlflowClient

            self._mlflow = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._mlflow

    def _dataset_runs(self, name: str) -> tuple[Any, int]:
        """The dataset's latest finished version run (or None) and the highest version number ever used."""
        if not self.exists:
            return None, 0
        from mlflow.entities import ViewType

        experiment = self.client.get_experiment_by_name(DATASETS)
        if experiment is None:
            return None, 0
        runs, token = [], None
        while True:
            page = self.client.search_runs([experiment.experiment_id], f"tags.dataset = {_quoted(name)}",
                                           run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            runs += [run for run in page if run.data.tags.get("version", "").isdigit()]
            token = page.token
            if not token:
                break
        highest = max((int(run.data.tags["version"]) for run in runs), default=0)
        usable = [run for run in runs if run.info.status == "FINISHED" and run.info.lifecycle_stage == "active"]
        latest = max(usable, key=lambda run: int(run.data.tags["version"]), default=None)
        return latest, highest

    def _latest_model_version(self, name: str) -> Any:
        if not self.exists:
            return None
        found = self.client.search_model_versions(f"name = {_quoted(name)}", max_results=1,
                                                  order_by=["version_number DESC"])
        return found[0] if found else None

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(name, tags={"pytest_promptflow": "flow"},
                                                description=f"promptflow flow {name}, registered by pytest-promptflow")

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return str(self.client.create_experiment(name, artifact_location=self.artifacts_dir.as_uri()))
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)

    @contextmanager
    def _run(self, experiment: str, run_name: str, tags: Mapping[str, str]) -> Iterator[str]:
        """A run that ends FINISHED, or FAILED if its body raised (a failed run never counts as a version)."""
        run = self.client.create_run(self._experiment(experiment), run_name=scrub_text(run_name), tags=scrub(tags))
        run_id = run.info.run_id
        try:
            yield run_id
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")


def save_flow_model(folder: Path, path: Path) -> None:
    """Save the packaged flow ``folder`` as a pyfunc model at ``path`` (the flow is its artifact ``flow``)."""
    import logging
    import shutil

    import mlflow.pyfunc

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns that it cannot infer a signature: a flow's inputs are its own
    with tempfile.TemporaryDirectory(prefix="pytest-promptflow-flow-") as temporary:
        flow = Path(temporary) / FLOW_ARTIFACT  # MLflow names the artifact folder after the source folder
        shutil.copytree(folder, flow)
        try:
            mlflow.pyfunc.save_model(path=str(path), python_model=str(Path(__file__).with_name("mlflow_model.py")),
                                     artifacts={FLOW_ARTIFACT: str(flow)}, pip_requirements=requirements())
        finally:
            logger.setLevel(level)


def requirements() -> list[str]:
    """What loading the model needs besides MLflow: this plugin (the model's code) and promptflow."""
    pins = []
    for package in ("pytest-promptflow", "promptflow"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory, as SQLAlchemy reads
    it), else None."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    database = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    return None if database in ("", ":memory:") else Path(database).absolute()


def _quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's search syntax (which has no escapes)."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise SpecError(None, f"name {value!r} has both kinds of quotes, which MLflow cannot search for",
                    "rename it")


@contextmanager
def _quietly() -> Iterator[None]:
    """MLflow without telemetry, info lines or progress bars (see ``reporting.tracking``)."""
    from ..reporting.tracking import _mlflow_quietly

    saved = os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    try:
        with _mlflow_quietly():
            yield
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = saved
