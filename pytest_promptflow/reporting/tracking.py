"""Tracking history: each cell of the session as one MLflow run, so ``mlflow ui`` compares cells
across commits. Off unless asked for; MLflow is imported only when a session logs to it.

Runs are written through ``mlflow.MlflowClient`` (never the fluent ``mlflow.*`` calls and their
global active run), once, on the controller, after every report file is written. MLflow's usage
telemetry stays off for them (see ``_mlflow_quietly``).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import pytest

from ..extras import MODULES, install_command, missing_module
from ..scrub import scrub_text

PLUGIN = "promptflow-tracking"
TELEMETRY = "MLFLOW_DISABLE_TELEMETRY"
DEFAULT_EXPERIMENT = "pytest-promptflow"
REPORT_FILES = ("report.json", "rows.csv", "metrics.csv", "experiments.csv", "report.html")
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # stores MLflow opens in process, without a server
ENVIRONMENT_PARAMS = ("git_commit", "build_id", "promptflow_env", "llm_mode")
MAX_KEY, MAX_PARAM, MAX_TAG = 250, 6000, 8000  # mlflow.utils.validation
MAX_METRICS, MAX_PARAMS_OR_TAGS = 1000, 100  # per log_batch call
NOT_IN_KEY = re.compile(r"[^\w./\- ]", re.ASCII)  # MLflow's key characters (a colon is refused on Windows)
SPELLED = {".pass@k": ".pass_at_k", ".pass^k": ".pass_hat_k"}  # repeats' metrics, which "_" alone would merge


@dataclass(frozen=True)
class Tracking:
    """Where the runs go: a tracking URI, an experiment, and (for a new experiment in a database
    MLflow opens itself) the folder its artifacts go to, instead of ./mlruns in the working dir."""

    uri: str
    experiment: str
    artifact_location: str | None


def tracking_from_config(config: pytest.Config) -> Tracking | None:
    """The session's tracking settings, or None when nobody asked. ``--promptflow-mlflow-uri`` on the
    command line asks by itself; a URI in the ini file does not."""
    uri = config.getoption("promptflow_mlflow_uri")
    if not (uri or config.getoption("promptflow_mlflow") or config.getini("promptflow_mlflow")):
        return None
    if not mlflow_installed():
        raise pytest.UsageError(f"pytest-promptflow: MLflow tracking needs the 'mlflow' extra; "
                                f"fix: {install_command('mlflow')}")
    return project_store(config)


def project_store(config: pytest.Config) -> Tracking:
    """The project's MLflow store, which tracked runs and the release's registry share: the option,
    else the ini value, else a SQLite file in the rootdir."""
    rootdir = config.rootpath
    uri = (config.getoption("promptflow_mlflow_uri") or config.getini("promptflow_mlflow_uri")
           or f"sqlite:///{(rootdir / 'mlflow.db').as_posix()}")
    experiment = config.getini("promptflow_mlflow_experiment") or DEFAULT_EXPERIMENT
    return settings(uri, experiment, rootdir)


def mlflow_installed() -> bool:
    return missing_module(MODULES["mlflow"]) is None


def settings(uri: str, experiment: str, rootdir: Path) -> Tracking:
    """A relative SQLite path is relative to the rootdir (like every path in the ini file), and its
    artifacts go beside it; other databases' artifacts go to ``<rootdir>/mlartifacts``."""
    scheme = uri.partition(":")[0].partition("+")[0].lower()
    if scheme == "sqlite" and uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        database = Path(uri[len("sqlite:///"):])
        database = database if database.is_absolute() else rootdir / database
        return Tracking(f"sqlite:///{database.as_posix()}", experiment, (database.parent / "mlartifacts").as_uri())
    artifacts = (rootdir / "mlartifacts").as_uri() if scheme in DATABASES else None
    return Tracking(uri, experiment, artifacts)


def register_tracking(config: pytest.Config) -> None:
    """Register the tracking plugin on the controller when tracking was asked for."""
    tracking = tracking_from_config(config)
    if tracking is not None and not hasattr(config, "workerinput"):
        config.pluginmanager.register(TrackingPlugin(tracking), PLUGIN)


def log_to_tracking(config: pytest.Config, document: Mapping[str, Any], folder: Path | None) -> None:
    """Log the document's cells when tracking is on (called once the report files are written)."""
    plugin = config.pluginmanager.get_plugin(PLUGIN)
    if isinstance(plugin, TrackingPlugin):
        plugin.log(document, folder)


class TrackingPlugin:
    """Logs the session's cells, then says in the terminal summary where they went (or why not)."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self.message = ""

    def log(self, document: Mapping[str, Any], folder: Path | None) -> None:
        where = f"MLflow experiment {self.tracking.experiment} at {redact(self.tracking.uri)}"
        try:
            if folder is None:  # no report folder asked for: the runs still get the report files
                from .files import write_reports

                with tempfile.TemporaryDirectory(prefix="promptflow-report-") as temporary:
                    write_reports(document, Path(temporary))
                    runs = log_cells(self.tracking, document, Path(temporary))
            else:
                runs = log_cells(self.tracking, document, folder)
        except Exception as error:  # the suite's results and reports stand; the tracking store did not take them
            text = str(error).replace(self.tracking.uri, redact(self.tracking.uri)).splitlines()
            self.message = (f"promptflow: could not log to {where}: {type(error).__name__}: "
                            f"{text[0] if text else ''}")
            return
        self.message = f"promptflow: {len(runs)} cell{'s' * (len(runs) != 1)} logged as runs of {where}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.message:
            terminalreporter.write_line(self.message, yellow="could not" in self.message)


def log_cells(tracking: Tracking, document: Mapping[str, Any], folder: Path) -> list[str]:
    """One finished run per cell, named by the cell id: params, metrics, tags, and the report files
    of ``folder`` as artifacts. Returns the run ids."""
    with _mlflow_quietly():
        return _log_cells(tracking, document, folder)


@contextmanager
def _mlflow_quietly() -> Iterator[None]:
    """MLflow as a library of this session's end, nothing more: its usage telemetry (a file under
    ~/.config and a thread that sends each created run to MLflow's servers) stays off unless the
    user set MLFLOW_DISABLE_TELEMETRY themselves; its info lines and SQLAlchemy deprecation warnings
    are not the user's to act on (our summary line says where the runs went)."""
    saved = os.environ.get(TELEMETRY)
    os.environ.setdefault(TELEMETRY, "true")  # read when mlflow is imported and at each tracked call
    try:
        import mlflow  # noqa: F401  # first: importing it sets its loggers' levels

        logger = logging.getLogger("mlflow")
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                yield
        finally:
            logger.setLevel(level)
    finally:
        if saved is None:
            os.environ.pop(TELEMETRY, None)


def _log_cells(tracking: Tracking, document: Mapping[str, Any], folder: Path) -> list[str]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=tracking.uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(tracking.experiment, artifact_location=tracking.artifact_location))
    files = [folder / name for name in REPORT_FILES if (folder / name).is_file()]
    environment = document.get("environment", {})
    run_ids = []
    for flow in document["flows"]:
        for cell in flow["cells"]:
            run = client.create_run(experiment_id, run_name=cell["cell"])
            run_id = run.info.run_id
            now = int(time.time() * 1000)
            metrics = [Metric(key, value, now, 0) for key, value in metric_items(cell["metrics"])]
            params = [Param(key, value) for key, value in param_items(cell, environment)]
            tags = [RunTag(key, value) for key, value in tag_items(cell, flow, environment)]
            for chunk in _chunks(metrics, MAX_METRICS):
                client.log_batch(run_id, metrics=chunk)
            for chunk in _chunks(params, MAX_PARAMS_OR_TAGS):
                client.log_batch(run_id, params=chunk)
            for chunk in _chunks(tags, MAX_PARAMS_OR_TAGS):
                client.log_batch(run_id, tags=chunk)
            for path in files:
                client.log_artifact(run_id, str(path))
            client.set_terminated(run_id, "FAILED" if cell["outcome"] in ("failed", "error") else "FINISHED")
            run_ids.append(run_id)
    return run_ids


def param_items(cell: Mapping[str, Any], environment: Mapping[str, Any]) -> list[tuple[str, str]]:
    """flow, config, ``variant.<node>``, ``override.<key>``, dataset, its hash, and the build's columns."""
    from .csv_files import text

    items = [("flow", cell["flow"]), ("config", cell["config"])]
    items += [(f"variant.{node}", text(cell["variants"][node])) for node in sorted(cell["variants"])]
    items += [(f"override.{key}", text(cell["overrides"][key])) for key in sorted(cell["overrides"])]
    items += [("dataset", cell["dataset"]), ("dataset_hash", cell["dataset_hash"])]
    items += [(name, str(environment.get(name, ""))) for name in ENVIRONMENT_PARAMS]
    return [(key, scrub_text(value)[:MAX_PARAM]) for key, value in mlflow_keys(items)]


def metric_items(metrics: Mapping[str, float]) -> list[tuple[str, float]]:
    return [(key, float(value)) for key, value in mlflow_keys(sorted(metrics.items()))]


def tag_items(cell: Mapping[str, Any], flow: Mapping[str, Any],
              environment: Mapping[str, Any]) -> list[tuple[str, str]]:
    """outcome, best (yes/no), the session's report run id, and the commit where MLflow's UI shows it."""
    tags = [("outcome", cell["outcome"]), ("best", "yes" if cell["config"] == flow["best"] else "no"),
            ("promptflow.session", str(environment.get("run_id", "")))]
    if environment.get("git_commit"):
        tags.append(("mlflow.source.git.commit", str(environment["git_commit"])))
    return [(key, scrub_text(value)[:MAX_TAG]) for key, value in tags]


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow key: only letters, digits, ``_ - . /`` and space, no path that resolves
    elsewhere (``a//b``, ``../x``, ``/x``), at most 250 characters."""
    for ending, spelled in SPELLED.items():
        name = name.removesuffix(ending) + spelled if name.endswith(ending) else name
    key = NOT_IN_KEY.sub("_", name)
    if posixpath.normpath(key) != key or key.startswith(("/", "..")) or key in ("", "."):
        key = key.replace("/", "_")  # no path left to resolve
        key = "_" + key if key in ("", ".") or key.startswith("..") else key
    return key[:MAX_KEY]


def mlflow_keys(items: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Mapped keys, made unique with a ``_2``, ``_3``... where two names map to the same key."""
    seen: set[str] = set()
    found = []
    for name, value in items:
        key = base = mlflow_key(name)
        count = 1
        while key in seen:
            count += 1
            key = f"{base[:MAX_KEY - 1 - len(str(count))]}_{count}"
        seen.add(key)
        found.append((key, value))
    return found


def redact(uri: str) -> str:
    """The URI without a password (``user:secret@host`` -> ``user:***@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    return (items[i:i + size] for i in range(0, len(items), size))
