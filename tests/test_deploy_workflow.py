"""A packaged agent-framework workflow served by the local target: its server runs in the second
environment, behind the same router and HTTP API as promptflow's deployments, and its LLM calls reach the
machine's shared embedded model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from test_deploy_local import post, processes_mentioning

from pytest_promptflow.deploy.base import DeployError, DeploymentSettings, DeploymentSpec
from pytest_promptflow.deploy.local import LocalTarget
from pytest_promptflow.errors import SpecError
from pytest_promptflow.llm.embedded import RUNTIME_VARIABLE
from pytest_promptflow.packaging import WORKFLOW_MANIFEST, package_workflow
from pytest_promptflow.workflows.python import find_python
from pytest_promptflow.workflows.spec import parse

ROOT = Path(__file__).resolve().parents[1]
ECHO_WORKFLOW = '''\
from agent_framework import Executor, WorkflowBuilder, WorkflowContext, handler


class Echo(Executor):
    def __init__(self, prefix):
        super().__init__(id="echo")
        self.prefix = prefix

    @handler
    async def echo(self, text: str, ctx: WorkflowContext[None, dict]) -> None:
        if text == "boom":
            raise ValueError("boom on purpose")
        if text != "silent":
            await ctx.yield_output({"answer": self.prefix + text})


def create_workflow(prefix="echo:"):
    return WorkflowBuilder(start_executor=Echo(prefix)).build()
'''


def second_python() -> Path:
    """The second environment's python; its absence skips these tests, except on CI, where it fails them."""
    try:
        return Path(find_python(ROOT, "", "sentiment_maf"))
    except SpecError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the second environment is missing on CI: {error}")
        pytest.skip(f"no second environment: {error}")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    python = second_python()
    target = LocalTarget(tmp_path_factory.mktemp("deploy"), start_timeout=90, workflow_python=lambda flow: python)
    yield target
    for endpoint in target.endpoints():
        target.stop(endpoint)
    assert processes_mentioning(target.state_dir) == []


def packaged(folder: Path, module: Path, factory: str = "create_workflow", **args: object) -> Path:
    return package_workflow(module, factory, args, folder)[0]


def spec(endpoint: str, name: str, folder: Path, **variables: str) -> DeploymentSpec:
    return DeploymentSpec(endpoint, name, "wf", folder, {"name": "wf", "version": name}, {},
                          DeploymentSettings(environment_variables=variables), project_dir=folder.parent,
                          output_dir=folder.parent)


def echo_module(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.py").write_text(ECHO_WORKFLOW, encoding="utf-8")
    return folder / "workflow.py"


def test_the_sample_workflow_serves_rows_through_the_router_on_the_shared_model(
        target: LocalTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "runtime"  # the shared model's folder, the test's own
    monkeypatch.setenv(RUNTIME_VARIABLE, str(runtime))
    sample = parse("maf:flows/sentiment_maf/workflow.py:create_workflow", ROOT)
    folder = packaged(tmp_path / "package", sample.path, sample.factory)
    assert json.loads((folder / WORKFLOW_MANIFEST).read_text()) == {
        "module": "workflow.py", "factory": "create_workflow", "args": {}}
    deployed = target.deploy(spec("sentiment", "blue", folder))
    target.set_traffic("sentiment", {"blue": 100})
    rows = [json.loads(line) for line in (ROOT / "evals/data/sentiment.jsonl").read_text().splitlines()[:3]]
    answers = [post(f"{target.router_url('sentiment')}/score", {"text": row["text"]}) for row in rows]
    assert [(status, by) for status, _, by in answers] == [(200, "blue")] * 3
    assert all(answer["category"] in ("positive", "negative", "neutral", "unknown") for _, answer, _ in answers)
    server = psutil.Process(int(deployed.detail.split()[1]))
    assert [lease.name for lease in (runtime / "leases").iterdir()] == [str(server.pid)]
    model = psutil.Process(json.loads((runtime / "model.json").read_text())["pid"])
    assert "pytest_promptflow.llm.local_server" in model.cmdline()  # the machine's model, leased to the server
    target.remove("sentiment", "blue")
    model.wait(15)  # its only user is gone


def test_a_workflow_beside_a_flow_takes_its_share_and_answers_its_errors_as_promptflow_does(
        target: LocalTarget, tmp_path: Path) -> None:
    module = echo_module(tmp_path / "echo")
    target.deploy(spec("shop", "blue", packaged(tmp_path / "blue", module, prefix="blue:")))
    target.deploy(spec("shop", "green", packaged(tmp_path / "green", module, prefix="green:")))
    target.set_traffic("shop", {"blue": 50, "green": 50})
    url = f"{target.router_url('shop')}/score"
    answers = [post(url, {"text": str(i)}) for i in range(40)]
    assert all(status == 200 and answer == {"answer": f"{by}:{i}"} for i, (status, answer, by) in enumerate(answers))
    assert {by for _, _, by in answers} == {"blue", "green"}
    assert target.invoke("shop", "green", {"text": "x"}) == {"answer": "green:x"}
    with pytest.raises(DeployError, match=r"^HTTP 400: .*ValueError: boom on purpose"):
        target.invoke("shop", "blue", {"text": "boom"})
    with pytest.raises(DeployError, match="the workflow yielded no output; fix: call ctx.yield_output"):
        target.invoke("shop", "blue", {"text": "silent"})
    assert target.problems("shop") == []
    servers = [psutil.Process(int(d.detail.split()[1])) for d in target.deployments("shop").values()]
    assert [p.children() for p in servers] == [[], []]  # a workflow that calls no model starts none
    target.stop("shop")


def test_a_workflow_that_cannot_load_is_one_line_and_leaves_nothing(target: LocalTarget, tmp_path: Path) -> None:
    module = echo_module(tmp_path / "broken")
    module.write_text("import not_a_module_anywhere\n" + ECHO_WORKFLOW, encoding="utf-8")
    with pytest.raises(DeployError) as raised:
        target.deploy(spec("broken", "blue", packaged(tmp_path / "package", module)))
    message = str(raised.value)
    assert message.startswith("deployment 'blue' of endpoint 'broken': the flow server exited with code 1: cannot "
                              "serve ") and "ModuleNotFoundError: No module named 'not_a_module_anywhere'" in message
    assert "\n" not in message and target.endpoints() == []


def test_without_a_second_environment_a_workflow_deploy_is_one_line(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "deploy", workflow_python=lambda flow: Path(find_python(tmp_path, "", flow)))
    folder = packaged(tmp_path / "package", echo_module(tmp_path / "echo"))
    with pytest.raises(DeployError, match=r"^deployment 'blue' of endpoint 'wf': flow wf: agent-framework is not "
                                          r"installed beside this session and no second environment was found; "
                                          r"fix: run `pytest-promptflow env maf`"):
        target.deploy(spec("wf", "blue", folder))
    assert target.endpoints() == []
