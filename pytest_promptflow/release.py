"""The release gate over a report document: each flow's chosen configuration is approved (when
required), its datasets and its packaged flow registered (only what changed), then, with a
deployment target, deployed beside what serves and tested before it gets traffic (``deploy/stage.py``),
and a release record written to the report folder and the registry. A deployment that fails its
endpoint test gets no traffic and fails the session.

One function, ``release_document``, releases a document: ``--promptflow-release`` calls it once, on the
xdist controller (or the only process), after a session whose exit status is OK; ``pytest-promptflow
release report.json`` (cli.py) calls it on a saved one. A document of a failed session, a lone shard or a
merge missing a shard or with one failed is refused. A flow with an item deselected (``-k``, ``--lf``) or
skipped is not released, and the terminal says why. Without a pass nothing is written to the registry at all.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from .errors import SpecError
from .reporting.shards import incomplete
from .reporting.views import FlowView, ReleaseRecord
from .scrub import scrub, write_json

DESELECTED = "promptflow_deselected"
Say = Callable[[str], None]  # one line of what the release is doing, shown as it happens


def _silent(line: str) -> None:
    """Says nothing: a release run without a terminal."""


@dataclass(frozen=True)
class ReleaseSettings:
    registry: str  # "mlflow" or "azureml"
    approval: bool
    pins: Mapping[str, str]  # flow -> configuration label
    release_dir: Path  # pending and approved releases
    report_folder: Path | None
    store: Any  # reporting.tracking.Tracking: the MLflow store the mlflow registry writes to
    rootdir: Path
    deploy: Any = None  # deploy.stage.DeploySettings; None: register only


def choose(flow: Mapping[str, Any], pins: Mapping[str, str]) -> tuple[str | None, str]:
    """The configuration to release and why: the pinned one, else the best one."""
    pinned = pins.get(flow["flow"])
    if pinned is not None:
        if not any(cell["config"] == pinned for cell in flow["cells"]):
            known = ", ".join(sorted({cell["config"] for cell in flow["cells"]}))
            return None, f"pinned configuration {pinned!r} was not tested (tested: {known})"
        return pinned, f"pinned in promptflow_release_pins ({pinned})"
    if flow["best"] is None:
        return None, f"no best configuration: {flow['best_reason']}"
    return flow["best"], f"best configuration: {flow['best_reason']}"


def approval_payload(flow: Mapping[str, Any], configuration: str) -> dict[str, Any]:
    """Exactly what an approver sees, and what the approval's digest covers."""
    cells = [cell for cell in flow["cells"] if cell["config"] == configuration]
    return {
        "flow": flow["flow"],
        "configuration": configuration,
        "variants": cells[0]["variants"],
        "overrides": cells[0]["overrides"],
        "metrics": {cell["dataset"]: {k: v for k, v in cell["metrics"].items() if not k.startswith("latency.")}
                    for cell in cells},
        "verdicts": [_approved_verdict(v) for cell in cells for v in cell["verdicts"]],
        "datasets": sorted(({"name": cell["dataset"], "content_hash": cell["dataset_hash"]} for cell in cells),
                           key=lambda d: d["name"]),
    }


def _approved_verdict(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """A verdict as the approver sees it: its threshold, its confidence level and the bound that level checked,
    and for a comparison the baseline it was paired with and what it could detect."""
    keys: tuple[str, ...] = ("metric", "op", "threshold", "level", "bound", "actual", "passed")
    if verdict.get("baseline"):
        keys += ("baseline", "rule", "difference", "n", "discordant", "mde", "underpowered")
    return {k: verdict.get(k) for k in keys}


class Release:
    """Carries every flow of a passed session's document towards production, one record each."""

    def __init__(self, config: pytest.Config, settings: ReleaseSettings, document: Mapping[str, Any],
                 say: Say = _silent) -> None:
        self.config = config
        self.settings = settings
        self.document = document
        self.say = say
        self._registry: Any = None
        self.packages: dict[str, dict[str, Any]] = {}  # flow -> its packaged folder and connections
        self.scratch: Path | None = None  # run()'s temporary folder, where flows are packaged

    def run(self, blocked: Mapping[str, str]) -> list[dict[str, Any]]:
        """Each flow's record: decision, registered versions and, with a target, its deployment."""
        with tempfile.TemporaryDirectory(prefix="pytest-promptflow-release-") as scratch:
            self.scratch = Path(scratch)
            records = [self._flow(flow, blocked.get(flow["flow"])) for flow in self.document["flows"]]
            if self.settings.deploy is not None:
                from .deploy.stage import DeployStage

                DeployStage(self.config, self.settings.deploy, self.document, self.say).run(records, self.packages)
        for record in records:
            for amendment in self.config.hook.pytest_promptflow_release_record(config=self.config,
                                                                               record=ReleaseRecord.of(record)):
                record.update({key: value for key, value in (amendment or {}).items() if key not in record})
            if record["decision"] == "released":
                self.registry().record_release(record)
            self._write(record)
        return records

    def _flow(self, flow: Mapping[str, Any], blocked: str | None) -> dict[str, Any]:
        environment = self.document["environment"]
        record: dict[str, Any] = {"flow": flow["flow"], "time": _now(), "git_commit": environment.get("git_commit", ""),
                                  "build_id": environment.get("build_id", ""), "registry": self.settings.registry}
        if blocked:
            return {**record, "decision": "not released", "reason": blocked}
        configuration = self.config.hook.pytest_promptflow_release_choice(config=self.config, flow=FlowView.of(flow))
        reason = "chosen by a pytest_promptflow_release_choice hook"
        if configuration is None:
            configuration, reason = choose(flow, self.settings.pins)
        if configuration is None:
            return {**record, "decision": "not released", "reason": reason}
        payload = scrub(approval_payload(flow, configuration))  # as written: its digest is checked when read back
        record.update(payload, reason=reason, primary_metric=flow["primary_metric"])
        if configuration == flow["best"]:  # how it was selected, and its confirmation-half number with a split
            record["selection"] = flow.get("selection")
        from .approvals import digest

        record["digest"] = digest(payload)
        if self.settings.approval:
            try:
                approval = self._approval(flow["flow"], record["digest"], payload)
            except SpecError as error:  # e.g. a release file changed by hand
                return {**record, "decision": "not released", "reason": str(error)}
            record["approval"] = approval
            if approval["status"] != "approved":
                return {**record, "decision": approval["status"]}
        return self._register(flow, record)

    def _approval(self, flow: str, digest: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The recorded decision on exactly this payload; else it is written as pending."""
        from . import approvals

        found = approvals.decision(self.settings.release_dir, flow, digest)
        if found is not None and found["status"] in ("approved", "rejected"):
            return found
        release_id = approvals.release_id(flow, digest)
        path = approvals.write_pending(self.settings.release_dir, release_id, payload)
        return {"status": "pending approval", "release": release_id, "file": str(path),
                "approve_with": approvals.approve_command(release_id, self.settings.release_dir)}

    def _register(self, flow: Mapping[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        from .flows import load_target
        from .packaging import package_flow

        cells = [cell for cell in flow["cells"] if cell["config"] == record["configuration"]]
        source = cells[0]["flow_source"]
        if not source:
            return {**record, "decision": "not released",
                    "reason": f"flow {flow['flow']} is a Python callable: only flow folders and files are registered"}
        try:  # packaged first: a flow that cannot be packaged writes nothing to the registry
            # a workflow's source is its spec, maf:/abs/module.py:factory (the flow kind loads it as a flow)
            target = load_target(source if source.startswith("maf:") else Path(source), Path(source).parent)
            init = cells[0].get("init") or None
            assert self.scratch is not None, "flows are packaged only while Release.run runs"
            folder, content_hash = package_flow(target, record["variants"], record["overrides"],
                                                self.scratch / flow["flow"], init=init)
            registry = self.registry()
            names = ", ".join(dict.fromkeys(cell["dataset"] for cell in cells))
            self.say(f"promptflow release: {flow['flow']}: registering {record['configuration']} in "
                     f"{self.settings.registry}: data {names}, then the flow (only what changed)")
            with registry.lock():
                datasets = {}
                for cell in cells:
                    if cell["dataset_path"] not in datasets:
                        datasets[cell["dataset_path"]] = registry.register_dataset(
                            cell["dataset"], Path(cell["dataset_path"]), cell["dataset_hash"])
                tags = _model_tags(record, [v.as_json() for v in datasets.values()])
                model = registry.register_flow(flow["flow"], folder, content_hash, tags)
                rows = _rows_files(cells, self.scratch / "rows" / flow["flow"])
                registry.register_rows(flow["flow"], model.version, rows)
        except SpecError as error:
            return {**record, "decision": "not released", "reason": str(error)}
        self.packages[flow["flow"]] = {"folder": folder, "connections": target.connections(init)}
        return {**record, "decision": "released", "datasets": [v.as_json() for v in datasets.values()],
                "model": model.as_json()}

    def registry(self) -> Any:
        """The configured registry, made only when a flow is about to be registered."""
        if self._registry is None:
            self._registry = make_registry(self.config, self.settings)
        return self._registry

    def _write(self, record: Mapping[str, Any]) -> None:
        folder = self.settings.report_folder or self.settings.release_dir
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / f"release-{record['flow']}.json", record, indent=1, sort_keys=True, default=str)


def _rows_files(cells: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, Path]:
    """dataset -> its ``<dataset>.csv``: the released cell's lines of ``rows.csv``, kept with the flow version."""
    from .reporting.csv_files import rows_table, write_table

    folder.mkdir(parents=True, exist_ok=True)
    return {cell["dataset"]: write_table(folder / f"{cell['dataset']}.csv", rows_table([cell])) for cell in cells}


def make_registry(config: pytest.Config, settings: ReleaseSettings) -> Any:
    """The registry a conftest's ``pytest_promptflow_registry`` gives, else the configured Azure ML or MLflow one."""
    registry = config.hook.pytest_promptflow_registry(config=config)
    if registry is None and settings.registry == "azureml":
        from .registry.azureml import AzureMLRegistry

        registry = AzureMLRegistry.from_environment(os.environ)
    if registry is None:
        from .registry.mlflow_registry import MlflowRegistry

        store = settings.store  # artifacts beside a SQLite file, as the tracked runs' are
        artifacts = (Path(url2pathname(urlsplit(store.artifact_location).path)) if store.artifact_location
                     else settings.rootdir / "mlartifacts")
        registry = MlflowRegistry(store.uri, artifacts)
    return registry


def _model_tags(record: Mapping[str, Any], datasets: list[dict[str, Any]]) -> dict[str, str]:
    """What a model version says of itself: the metrics that passed, the data, the commit, the cell, and how
    it was selected (with a split, the confirmation half's unbiased number of the primary metric)."""
    tags = {"configuration": record["configuration"], "git_commit": record["git_commit"],
            "digest": record["digest"],
            "datasets": ",".join(f"{d['name']}:{d['version']}" for d in datasets)}
    for dataset, metrics in record["metrics"].items():
        for name, value in metrics.items():
            if not name.startswith(("llm.", "rows")):
                tags[f"metric.{dataset}.{name}"] = f"{value:.6g}"
    selection = record.get("selection") or {}
    if selection:
        tags["selection.mode"] = selection["mode"]
    if selection.get("optimism") is not None:
        tags["selection.optimism"] = f"{selection['optimism']:.6g}"
    for name, value in (selection.get("confirmation") or {}).items():
        tags[f"confirmation.{record['primary_metric']}.{name}"] = f"{value:.6g}"
    return tags


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def summary_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per flow: what was released, or why not."""
    lines = []
    for record in records:
        head = f"promptflow release: {record['flow']}: {record['decision']}"
        if record["decision"] == "released":
            model, datasets = record["model"], record["datasets"]
            data = ", ".join(f"{d['name']} v{d['version']} {'new' if d['created'] else 'reused'}" for d in datasets)
            lines.append(f"{head} {record['configuration']} as {model['name']} v{model['version']} "
                         f"({'new' if model['created'] else 'unchanged, reused'}); data: {data}")
        elif record["decision"] == "pending approval":
            lines.append(f"{head}; approve with: {record['approval']['approve_with']}")
        elif record["decision"] == "rejected":
            approval = record["approval"]
            lines.append(f"{head} by {approval.get('by', '?')}: {approval.get('reason', '')}")
        else:
            lines.append(f"{head}: {record['reason']}")
        if record.get("deployment"):
            lines += deployment_lines(record["flow"], record["deployment"])
    return lines


def not_run_lines(deselected: set[str], document: Mapping[str, Any]) -> list[str]:
    """The flows none of whose items ran: a release reads only its session's cells, never cells the report
    folder keeps from earlier runs (reporting/history.py), and says so."""
    ran = {flow["flow"] for flow in document["flows"]}
    return [f"promptflow release: {flow}: not released: none of its items ran in this session (a release uses "
            "only the cells its own session ran)" for flow in sorted(deselected - ran)]


def deployment_lines(flow: str, deployment: Mapping[str, Any]) -> list[str]:
    """Where the flow now serves and with what split, or the table of why its deployment was undone."""
    head = f"promptflow deploy: {flow}: {deployment['target']}"
    split = ", ".join(f"{name} {share}%" for name, share in sorted(deployment.get("split", {}).items()))
    status = deployment["status"]
    if "endpoint" not in deployment:  # refused before anything was deployed: nothing moved
        lines = [f"{head}: nothing deployed"]
    elif status in ("serving", "unchanged", "built"):
        said = {"serving": "serving", "unchanged": "unchanged, already serving", "built": "built (not deployed here)"}
        detail = f" ({deployment['detail']})" if deployment.get("detail") else ""
        url = f"; requests to {deployment['endpoint_url']}" if deployment.get("endpoint_url") else ""
        lines = [f"{head} endpoint {deployment['endpoint']}, deployment {deployment['deployment']}: {said[status]}; "
                 f"traffic {split}{detail}{url}"]
    else:
        previous = ", ".join(f"{n} {s}%" for n, s in sorted(deployment.get("previous_split", {}).items())) or "none"
        lines = [f"{head} endpoint {deployment['endpoint']}, deployment {deployment['deployment']}: "
                 f"{status.upper()}; traffic stays {previous}"]
    lines += [f"    {note}" for note in deployment.get("notes", [])]
    lines += [f"    FAILED {failure}" for failure in deployment.get("failures", [])]
    return lines


@dataclass(frozen=True)
class ReleaseOutcome:
    records: tuple[dict[str, Any], ...]
    lines: tuple[str, ...]  # what the terminal (or the command) says: a line per flow, or why nothing was
    failed: bool  # refused, or a new deployment did not deploy or failed its endpoint test


def release_document(config: Any, settings: ReleaseSettings, document: Mapping[str, Any], say: Say = _silent,
                     deselected: frozenset[str] = frozenset()) -> ReleaseOutcome:
    """The one release of a document, a session's (``ReleasePlugin``) or a saved one (``pytest-promptflow
    release``). ``config`` is the session's pytest.Config, or the project's (``project_config.ProjectConfig``);
    ``deselected``: flows with an item the session left out."""
    refused = refusal(document)
    if refused:
        return ReleaseOutcome((), (f"promptflow release: nothing released: {refused}",), True)
    if not document["flows"]:
        return ReleaseOutcome((), ("promptflow release: nothing released: no promptflow item ran",), False)
    blocked = {flow: "some of its items were deselected (-k, -m, --lf...): release runs on the whole suite"
               for flow in deselected}
    for flow in document["flows"]:
        skipped = [i["nodeid"] for c in flow["cells"] for i in c["items"] if i["outcome"] != "passed"]
        if skipped:
            blocked.setdefault(flow["flow"], f"{len(skipped)} of its items did not pass, e.g. {skipped[0]}")
    records = Release(config, settings, document, say).run(blocked)
    lines = summary_lines(records) + not_run_lines(set(deselected), document)
    failed = [r["flow"] for r in records if r.get("deployment", {}).get("failures")]
    if failed:  # the suite passed, but what it released does not serve
        lines.append(f"promptflow release: FAILED: the new deployment of {', '.join(failed)} did not deploy "
                     "or failed its endpoint test, and got no traffic")
    return ReleaseOutcome(tuple(records), tuple(lines), bool(failed))


def refusal(document: Mapping[str, Any]) -> str:
    """Why ``document`` may not be released ("" when it may): its session failed, it is one shard of several,
    or it is a merge with a shard failed or missing."""
    environment = document["environment"]
    if environment.get("shard"):
        return (f"it is shard {environment['shard']} of a suite: merge every shard's report "
                "(pytest-promptflow merge) and release the merged report.json")
    if environment.get("shards") is not None:
        return incomplete(environment["shards"])
    status = environment.get("exit_status")
    if status != 0:
        return (f"the session did not pass (exit status {status})" if status is not None
                else "the report records no exit status (an interrupted session?): run the suite again")
    return ""


class ReleasePlugin:
    """Registered with ``--promptflow-release``: watches what was deselected, then releases once."""

    def __init__(self, config: pytest.Config, settings: ReleaseSettings, reports: Any) -> None:
        self.config = config
        self.settings = settings
        self.reports = reports
        self.deselected: set[str] = set()  # flows with an item left out of this session
        self.lines: list[str] = []

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        from .reporting.header import planned_cell

        self.deselected.update(p.cell.flow for p in map(planned_cell, items) if p is not None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.deselected.update(getattr(node, "workeroutput", {}).get(DESELECTED, []))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller releases
            workeroutput[DESELECTED] = sorted(self.deselected)
            return
        if exitstatus != pytest.ExitCode.OK:
            self.lines = [f"promptflow release: nothing released: the session did not pass (exit status {exitstatus})"]
            return
        outcome = release_document(self.config, self.settings, self.reports.finish(), self._say(),
                                   frozenset(self.deselected))
        self.lines = list(outcome.lines)
        if outcome.failed:  # the suite passed, but what it released does not serve: the session fails
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _say(self) -> Say:
        """Writes a line to the terminal at once (the release runs after the tests, before the summary)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return _silent

        def say(line: str) -> None:
            reporter.ensure_newline()
            reporter.write_line(line)

        return say

    @pytest.hookimpl(trylast=True)  # after the comparison tables it follows from
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.lines:
            terminalreporter.write_line(line, red="FAILED" in line)
