"""The soak's consistency checks, each over what a project holds after runs were killed: the LLM answer
store, the MLflow registry, the local deployments (state against live processes), and the verdicts of
two report.json files. Each returns a ``Check``: what it found (facts) and what is wrong (problems).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Iterable, Mapping

from pytest_promptflow.deploy.local import ROUTER, SERVE, STATE_FILE, LocalTarget
from pytest_promptflow.llm import shapes
from pytest_promptflow.llm.store import FORMAT, CallRequest, Store
from pytest_promptflow.registry.mlflow_registry import DATASETS, ROWS_TAG

#: metrics of time and of where answers came from (latency.rows counts live rows), not of the answers
UNCOMPARED = ("latency.mean", "latency.p95", "latency.rows", "llm.cache_hits")
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, whatever HTTP_PROXY says


@dataclass
class Check:
    name: str
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        verdict = "consistent" if not self.problems else f"{len(self.problems)} PROBLEM(S)"
        return [f"{self.name}: {verdict}", *(f"    {fact}" for fact in self.facts),
                *(f"    PROBLEM {problem}" for problem in self.problems)]


# -- the LLM answer store ---------------------------------------------------------------------------

def check_store(root: Path) -> Check:
    """Every entry opens through the store, sits under its own key and holds a chat completion."""
    check = Check(f"LLM store {root}")
    entries = sorted(root.glob("*/*.json"))
    for path in entries:
        problem = _entry_problem(root, path)
        if problem:
            check.problems.append(f"{path.relative_to(root)}: {problem}")
    strays = sorted(root.rglob("*.tmp"))
    known = set(entries) | set(strays)
    others = sorted(p for p in root.rglob("*") if p.is_file() and p not in known)
    check.facts.append(f"{len(entries)} answers; readable through the store, under their key and a completion: "
                       f"{len(entries) - len(check.problems)}")
    check.facts.append(f"{len(strays)} stray *.tmp (a write cut short by a kill; never read as an answer)")
    check.problems += [f"{p.relative_to(root)}: a file that is no answer" for p in others]
    return check


def _entry_problem(root: Path, path: Path) -> str | None:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        fields = entry["request"]
        request = CallRequest(fields["provider"], fields["kind"], fields["model"], fields["api_version"],
                              fields["body"], fields.get("repeat", 0))
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable ({type(error).__name__}: {error})"
    if entry.get("format") != FORMAT or Store(root).path(request) != path:
        return "not stored under its request's key (format or key differ)"
    answer = Store(root).get(request)
    if answer is None or answer.status != 200:
        return f"the store does not answer it with HTTP 200 ({answer.status if answer else 'no answer'})"
    return shapes.problem(request.kind, answer.body)


# -- the MLflow registry --------------------------------------------------------------------------

def check_registry(project: Path) -> Check:
    """Every model version whole (READY, a finished run, its model files), no version or dataset version
    registered twice for the same content, and the SQLite file intact."""
    database = project / "mlflow.db"
    check = Check(f"MLflow registry {database}")
    if not database.is_file():
        check.facts.append("no registry (no run released)")
        return check
    with sqlite3.connect(database) as connection:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if integrity != "ok":
        check.problems.append(f"SQLite integrity_check: {integrity}")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{database}", registry_uri=f"sqlite:///{database}")
    for model in client.search_registered_models():
        _check_model(client, model.name, check)
    _check_datasets(client, check)
    statuses = Counter(f"{experiment.name}: {run.info.status}" for experiment in client.search_experiments()
                       for run in client.search_runs([experiment.experiment_id]))
    check.facts.append("runs: " + (", ".join(f"{key} {count}" for key, count in sorted(statuses.items())) or "none")
                       + " (a kill mid-registration leaves its run RUNNING; the registry never reads one)")
    return check


def registered(project: Path) -> dict[tuple[str, str], str]:
    """(model, version) -> model_hash of every registered flow version."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {(v.name, str(v.version)): v.tags.get("model_hash", "") for v in client.search_model_versions()}


def _check_model(client: Any, name: str, check: Check) -> None:
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    without_rows = []
    for version in versions:
        where = f"model {name} v{version.version}"
        run = client.get_run(version.run_id)
        files = {Path(found.path).name for found in client.list_artifacts(version.run_id, "model")}
        if version.status != "READY" or run.info.status != "FINISHED" or "MLmodel" not in files:
            check.problems.append(f"{where} is half-registered: status {version.status}, its run "
                                  f"{run.info.status}, model files {sorted(files) or 'none'}")
        if not version.tags.get("model_hash"):
            check.problems.append(f"{where} has no model_hash tag")
        rows = version.tags.get(ROWS_TAG)
        if not rows:
            without_rows.append(version.version)
        elif client.get_run(rows).info.status != "FINISHED":
            check.problems.append(f"{where}: its rows run {rows} did not finish")
    for before, after in pairwise(versions):
        if before.tags.get("model_hash") == after.tags.get("model_hash"):
            check.problems.append(f"model {name} v{before.version} and v{after.version} have the same content "
                                  "(registered twice)")
    check.facts.append(f"model {name}: {len(versions)} versions checked: READY, a finished run, model files, "
                       "content unlike the version before")
    if without_rows:
        check.facts.append(f"model {name}: versions without kept rows (a kill between registering and keeping "
                           f"the rows): {', '.join(without_rows)}")


def _check_datasets(client: Any, check: Check) -> None:
    experiment = client.get_experiment_by_name(DATASETS)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    finished: dict[str, list[Any]] = {}
    for run in runs:
        if run.info.status == "FINISHED":
            finished.setdefault(run.data.tags.get("dataset", "?"), []).append(run)
    for dataset, versions in sorted(finished.items()):
        numbers = [int(run.data.tags["version"]) for run in versions]
        twice = sorted(n for n, count in Counter(numbers).items() if count > 1)
        if twice:
            check.problems.append(f"dataset {dataset}: versions {twice} registered more than once")
        ordered = sorted(versions, key=lambda run: int(run.data.tags["version"]))
        for before, after in pairwise(ordered):
            if before.data.tags.get("data_hash") == after.data.tags.get("data_hash"):
                check.problems.append(f"dataset {dataset}: v{before.data.tags['version']} and "
                                      f"v{after.data.tags['version']} have the same content (registered twice)")
        check.facts.append(f"dataset {dataset}: {len(versions)} finished version(s) {sorted(numbers)}")


# -- the local deployments ------------------------------------------------------------------------

def check_deployments(state_dir: Path, models: Mapping[tuple[str, str], str]) -> Check:
    """Each endpoint's state names live, answering processes and a split of 100% over its deployments,
    each serving a registered version (``models``: (name, version) -> content hash); no folder or server
    process under ``state_dir`` is left that the state does not know."""
    state_dir = state_dir.resolve()  # as the servers' command lines name it
    check = Check(f"local deployments {state_dir}")
    target = LocalTarget(state_dir)
    tracked = set()
    for endpoint in target.endpoints():
        tracked |= _check_endpoint(target, endpoint, models, check)
    for folder in sorted(p for p in state_dir.glob("*") if p.is_dir()):
        if not (folder / STATE_FILE).is_file():
            check.problems.append(f"folder {folder.name}/ is no endpoint (no {STATE_FILE}): left by a kill")
    for pid, module in leftover_servers(state_dir, tracked):
        check.problems.append(f"pid {pid} ({module.rsplit('.', 1)[-1]}) runs from {state_dir} but no endpoint's "
                              "state names it: a server nothing tracks")
    return check


def _check_endpoint(target: LocalTarget, endpoint: str, models: Mapping[tuple[str, str], str],
                    check: Check) -> set[int]:
    state = json.loads((target.state_dir / endpoint / STATE_FILE).read_text(encoding="utf-8"))
    deployments, traffic = state.get("deployments") or {}, state.get("traffic") or {}
    router = state.get("router") or {}
    if set(traffic) != set(deployments) or sum(traffic.values()) != 100:
        check.problems.append(f"endpoint {endpoint}: traffic {traffic} is not 100% over its deployments "
                              f"{sorted(deployments)}")
    if not router or not _answers(f"http://127.0.0.1:{router.get('port')}/stats"):  # /health judges deployments
        check.problems.append(f"endpoint {endpoint}: its router (pid {router.get('pid')}) does not answer")
    for name, deployment in target.deployments(endpoint).items():
        model = deployment.model
        if not deployment.url or not _answers(deployment.url.removesuffix("/score") + "/health"):
            check.problems.append(f"endpoint {endpoint}: deployment {name} does not answer: {deployment.detail}")
        if models.get((str(model.get("name")), str(model.get("version")))) != model.get("content_hash"):
            check.problems.append(f"endpoint {endpoint}: deployment {name} serves {model.get('name')} "
                                  f"v{model.get('version')}, which the registry does not hold with that content")
    for folder in sorted(p for p in (target.state_dir / endpoint).iterdir() if p.is_dir()):
        if folder.name not in deployments:
            check.problems.append(f"endpoint {endpoint}: folder {folder.name}/ belongs to no deployment")
    shares = ", ".join(f"{name} {traffic.get(name, 0)}%" for name in sorted(deployments))
    check.facts.append(f"endpoint {endpoint}: a router and {len(deployments)} deployment(s) checked (alive, answering, "
                       f"a registered version); traffic {shares}")
    pids = [router.get("pid"), *(entry.get("pid") for entry in deployments.values())]
    return {int(pid) for pid in pids if pid}  # a deploy killed before it had a pid recorded none


def leftover_servers(state_dir: Path, tracked: Iterable[int]) -> list[tuple[int, str]]:
    """(pid, module) of flow servers and routers running from ``state_dir`` that no endpoint state names."""
    import psutil

    known, found = set(tracked), []
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        module = next((m for m in (SERVE, ROUTER) if f"-m {m} " in command), None)
        if module and str(state_dir) in command and process.info["pid"] not in known:
            found.append((process.info["pid"], module))
    return found


def _answers(url: str) -> bool:
    try:
        with _direct.open(url, timeout=10) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# -- verdicts ---------------------------------------------------------------------------------------

def verdicts(report: Path) -> dict[str, Any]:
    """What a run decided, per cell: its items' outcomes, its metrics (but timing) and its rows' outputs,
    errors and scores."""
    document = json.loads(report.read_text(encoding="utf-8"))
    cells = {}
    for flow in document["flows"]:
        for cell in flow["cells"]:
            cells[cell["cell"]] = {
                "items": {item["nodeid"]: item["outcome"] for item in cell["items"]},
                "metrics": {k: v for k, v in cell["metrics"].items() if k not in UNCOMPARED},
                "rows": [(row["id"], row["outputs"], row["error"], row["scores"]) for row in cell["rows"]],
            }
    return cells


def compare_verdicts(reference: Path, final: Path) -> tuple[Check, list[str]]:
    """The check (a problem per differing cell, metric, item or row set) and a table of both runs."""
    check = Check("verdicts: final clean run against the never-interrupted reference")
    ours, theirs = verdicts(final), verdicts(reference)
    table = [f"    {'cell':<32} {'items (ref / final)':<21} {'accuracy':<13} {'error_rate':<13} rows"]
    for cell in sorted(set(ours) | set(theirs)):
        mine, other = ours.get(cell), theirs.get(cell)
        if mine is None or other is None:
            check.problems.append(f"{cell}: only in the {'reference' if mine is None else 'final'} run")
            continue
        for part in ("items", "metrics", "rows"):
            if mine[part] != other[part]:
                check.problems.append(f"{cell}: {part} differ: reference {_short(other[part])}, "
                                      f"final {_short(mine[part])}")
        outcomes = f"{'/'.join(other['items'].values())} / {'/'.join(mine['items'].values())}"
        table.append(f"    {cell:<32} {outcomes:<21} {_pair(other, mine, 'accuracy'):<13} "
                     f"{_pair(other, mine, 'error_rate'):<13} {'same' if mine['rows'] == other['rows'] else 'DIFFER'}")
    compared = sum(len(cell["metrics"]) for cell in ours.values())
    check.facts.append(f"{len(ours)} cells: items, {compared} metrics (timing left out) and every row's output, "
                       "error and scores compared")
    return check, table


def _pair(reference: Mapping[str, Any], final: Mapping[str, Any], metric: str) -> str:
    return f"{reference['metrics'].get(metric)} / {final['metrics'].get(metric)}"


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
