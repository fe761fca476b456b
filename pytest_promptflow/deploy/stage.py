"""The release's last stage: every registered flow deployed, its endpoint tested, then promoted or rolled back.

All new deployments go up first (each beside what serves, with no traffic), then one endpoint test
covers them all (one child pytest for the whole suite), then each flow's traffic moves or its new
deployment goes. Built-only targets (Docker, Kubernetes) write their artifacts with the split and
say that the endpoint test runs where they are deployed.

A cut-over: with ``TWIN`` set, what goes beside the serving deployment is the flow's migrated workflow,
packaged as a folder, and the same endpoint test (the flow's rows, its items judging the twin's answers)
decides whether it gets its configured share or is rolled back. An endpoint with nothing serving gets the
promptflow flow first: a cut-over moves traffic from something.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pytest

from ..errors import SpecError, Where
from ..packaging import is_workflow
from .answers import EndpointAnswers
from .base import DeployError, DeploymentSpec, Target
from .endpoint_test import answer_failures, ask, rerun_items, verdict_failures
from .rollout import Rollout, deploy, plan, promote, roll_back, sample_request
from .settings import deployment_settings

TARGETS = ("local", "docker", "kubernetes", "azureml", "none")
NO_WORKFLOWS = ("docker", "kubernetes", "azureml")  # built-in targets that serve only promptflow flows so far


@dataclass(frozen=True)
class DeploySettings:
    target: str  # one of TARGETS, or a name a pytest_promptflow_deploy_target hook knows
    config_file: Path | None  # the template's deployment_config.json
    env: str
    rows: int  # rows of each dataset the endpoint test sends (0: all)
    latency: float  # p95 seconds the endpoint must answer within
    state_dir: Path  # the local target's endpoints
    output_dir: Path  # built artifacts and the endpoint test's files
    llm: tuple[str, Path]  # the suite's LLM mode and store, which the endpoint test's evaluators use too


def make_target(config: pytest.Config, settings: DeploySettings) -> Target | None:
    """A hook's target for the name, else the built-in one; None for ``none``."""
    found = config.hook.pytest_promptflow_deploy_target(config=config, name=settings.target)
    if found is not None or settings.target == "none":
        return found
    if settings.target == "local":
        from ..workflows.python import INI, find_python
        from .local import LocalTarget

        configured = str(config.getini(INI) or "")
        return LocalTarget(settings.state_dir,
                           workflow_python=lambda flow: Path(find_python(config.rootpath, configured, flow)))
    if settings.target == "docker":
        from .docker import DockerTarget

        return DockerTarget(settings.output_dir / "docker")
    if settings.target == "kubernetes":
        from .kubernetes import KubernetesTarget

        return KubernetesTarget(settings.output_dir / "kubernetes")
    if settings.target == "azureml":
        from .azureml import AzureMLTarget

        return AzureMLTarget.from_environment(os.environ)
    raise DeployError(f"no pytest_promptflow_deploy_target hook made a target called {settings.target!r}")


class DeployStage:
    def __init__(self, config: pytest.Config, settings: DeploySettings, document: Mapping[str, Any],
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.config = config
        self.settings = settings
        self.document = document
        self.say = say  # a line of progress, shown as it happens

    def run(self, records: Sequence[dict[str, Any]], packages: Mapping[str, Mapping[str, Any]]) -> None:
        """Deploys each released record's package (by flow), writing ``record["deployment"]``."""
        released = [r for r in records if r["decision"] == "released"]
        if not released:
            return
        try:
            target = make_target(self.config, self.settings)
        except (DeployError, SpecError) as error:  # e.g. Azure ML settings missing from the environment
            for record in released:
                record["deployment"] = {"target": self.settings.target, "status": "failed", "failures": [str(error)]}
            return
        if target is None:
            return
        rollouts = []
        for record in released:
            rollout = self._deploy(target, record, packages[record["flow"]])
            if rollout is not None:
                rollouts.append(rollout)
        tested = [r for r in rollouts if r.status == "deployed" and target.live]
        if tested:
            self._test(tested, {r["flow"]: r for r in released})
        for rollout in rollouts:
            if rollout.status != "deployed":
                continue
            try:
                if rollout.failures:
                    self._say(rollout, f"rolling back {rollout.deployment}; traffic stays {_split(rollout.previous)}")
                    roll_back(rollout)
                else:
                    self._say(rollout, f"traffic {_split(rollout.previous)} -> {_split(rollout.split)}")
                    promote(rollout)
            except DeployError as error:
                rollout.failures.append(f"{'rollback' if rollout.failures else 'moving traffic'} failed: {error}")
                rollout.status = "failed"
            if not target.live and rollout.status == "serving":
                rollout.status = "built"
            rollout.endpoint_url = endpoint_url(rollout) if rollout.status == "serving" else ""
        for rollout in rollouts:
            next(r for r in released if r["flow"] == rollout.flow)["deployment"] = rollout.as_json()

    def _deploy(self, target: Target, record: dict[str, Any], package: Mapping[str, Any]) -> Rollout | None:
        model = {**record["model"], "registry": record["registry"]}
        notes = []
        try:
            settings = deployment_settings(self.settings.config_file, target.name, self.settings.env, record["flow"])
            if settings.twin and target.name in NO_WORKFLOWS:
                raise DeployError(f"TWIN: the {target.name} target cannot serve an agent-framework workflow yet; "
                                  "cut over on the local target, or remove TWIN from this entry")
            if target.name in NO_WORKFLOWS and is_workflow(Path(package["folder"])):
                raise DeployError(f"the {target.name} target cannot serve an agent-framework workflow yet; "
                                  "deploy it with --promptflow-target local")
            if settings.twin and any(target.traffic(settings.endpoint_name or record["flow"]).values()):
                package, model = self._twin(record["flow"], settings.twin, model)
                notes.append(f"the twin {settings.twin} goes beside the serving deployment (cut-over)")
            elif settings.twin:
                notes.append(f"the twin {settings.twin} goes beside this deployment at the next release: "
                             "a cut-over needs a deployment serving traffic")
            rollout = plan(target, record["flow"], settings, model)
        except (DeployError, SpecError) as error:
            record["deployment"] = {"target": target.name, "status": "failed", "failures": [str(error)]}
            return None
        rollout.notes += notes
        if rollout.status == "unchanged":
            rollout.endpoint_url = endpoint_url(rollout)
            return rollout
        self._say(rollout, f"starting deployment {rollout.deployment} of {target.name} endpoint {rollout.endpoint} "
                           "(no traffic until its endpoint test passes)")
        spec = DeploymentSpec(rollout.endpoint, rollout.deployment, record["flow"], Path(package["folder"]), model,
                              dict(package["connections"]), settings, self.config.rootpath, self.settings.output_dir)
        try:
            deploy(rollout, spec)
        except DeployError as error:
            rollout.failures.append(str(error))
            rollout.status = "failed"
            self._say(rollout, f"deployment {rollout.deployment} FAILED: {error}")
            return rollout
        detail = rollout.deployed.detail if rollout.deployed is not None else ""
        self._say(rollout, f"deployment {rollout.deployment} is up{f' ({detail})' if detail else ''}")
        try:  # up, and answering the template's sample request (if any) before the rows
            probe = sample_request(settings, self.settings.config_file) if target.live else None
            if probe is not None:
                target.invoke(rollout.endpoint, rollout.deployment, probe)
        except DeployError as error:  # a failure stays "deployed": it is rolled back like a failed test
            rollout.failures.append(f"TEST_FILE_PATH request: {error}")
        return rollout

    def _twin(self, flow: str, twin: str, model: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The twin packaged as a folder (under the output folder) and the model record its deployment carries:
        the released flow's version, the twin's content hash."""
        from ..packaging import package_workflow
        from ..workflows.spec import parse

        where = Where(self.settings.config_file) if self.settings.config_file else None
        spec = parse(twin, self.config.rootpath, where)
        folder = self.settings.output_dir / "twin" / flow
        shutil.rmtree(folder, ignore_errors=True)
        folder, content_hash = package_workflow(spec.path, spec.factory, {}, folder)
        return {"folder": folder, "connections": {}}, {**model, "content_hash": content_hash, "twin": twin}

    def _test(self, rollouts: Sequence[Rollout], records: Mapping[str, Mapping[str, Any]]) -> None:
        """Every deployment answers its flow's released cells; then the suite judges those answers."""
        answers, nodeids = {}, []
        flows = {flow["flow"]: flow for flow in self.document["flows"]}
        for rollout in rollouts:
            if rollout.failures:
                continue
            record = records[rollout.flow]
            cells = [c for c in flows[rollout.flow]["cells"] if c["config"] == record["configuration"]]
            answers[rollout.flow] = ask(rollout.target, rollout.endpoint, rollout.deployment, cells,
                                        self.settings.rows, functools.partial(self._rows_done, rollout))
            rollout.failures += answer_failures(cells, answers[rollout.flow], self.settings.latency)
            nodeids += sorted({item["nodeid"] for cell in cells for item in cell["items"]})
        if not answers:
            return
        items = sorted(set(nodeids))
        self.say(f"promptflow deploy: endpoint test: {len(items)} item{'s' * (len(items) != 1)} again on the "
                 "endpoints' answers")
        code, document, tail = rerun_items(self.config, EndpointAnswers(self.settings.rows, answers),
                                           items, self.settings.output_dir / "endpoint-test", self.settings.llm)
        for rollout in rollouts:
            if rollout.flow in answers:
                rollout.failures += verdict_failures(document, rollout.flow, code, tail)
                try:
                    extras = self.config.hook.pytest_promptflow_endpoint_test(
                        config=self.config, rollout=rollout, answers=answers[rollout.flow])
                except Exception as error:  # a broken check fails the deployment, not the release
                    extras = [[f"pytest_promptflow_endpoint_test raised {type(error).__name__}: {error}"]]
                for extra in extras:
                    rollout.failures += list(extra or [])
                failed = f"FAILED: {rollout.failures[0]}" if rollout.failures else "passed"
                self._say(rollout, f"endpoint test {failed}")

    def _rows_done(self, rollout: Rollout, done: int, total: int) -> None:
        self._say(rollout, f"endpoint test: {done} of {total} rows answered by {rollout.deployment}")

    def _say(self, rollout: Rollout, what: str) -> None:
        self.say(f"promptflow deploy: {rollout.flow}: {what}")


def _split(split: Mapping[str, int]) -> str:
    """``blue 90%, green 10%``, or ``none``."""
    return ", ".join(f"{name} {share}%" for name, share in sorted(split.items()) if share) or "none"


def endpoint_url(rollout: Rollout) -> str:
    """Where clients send requests: the local endpoint's router, else the deployment's endpoint address (Azure ML's
    scoring URI is the endpoint's); "" for a built-only target or a router that is down."""
    router = getattr(rollout.target, "router_url", None)
    if router is not None:
        try:
            return f"{router(rollout.endpoint)}/score"
        except DeployError:
            return ""
    return rollout.deployed.url if rollout.deployed is not None else ""
