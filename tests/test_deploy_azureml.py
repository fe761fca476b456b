"""The Azure ML deployment target, against ``FakeMLClient`` at the SDK boundary (this machine cannot reach Azure).

The entities our code sends are azure-ai-ml's real ``ManagedOnlineEndpoint``, ``ManagedOnlineDeployment``,
``Environment`` and ``Model`` objects; only the operations that would talk to the workspace are faked,
with Azure's rules on names and traffic, and an ``invoke`` that runs the deployed flow folder in process.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("azure.ai.ml", reason="azure-ai-ml is the 'azureml' extra (in 'dev')")

from azure.ai.ml.entities import (  # noqa: E402
    Environment,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
)
from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name  # noqa: E402
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError  # noqa: E402

from pytest_promptflow.deploy.azureml import DEFAULT_IMAGE, AzureMLTarget, azure_name  # noqa: E402
from pytest_promptflow.deploy.base import (  # noqa: E402
    DeployError,
    Deployment,
    DeploymentSettings,
    DeploymentSpec,
    Target,
)
from pytest_promptflow.errors import SpecError  # noqa: E402
from pytest_promptflow.flows import load_target  # noqa: E402
from pytest_promptflow.registry.azureml import AzureMLRegistry  # noqa: E402

SECRET = "sk-planted-0123456789abcdef"


class FakePoller:
    """What ``begin_*`` returns: the long-running operation, already done."""

    def __init__(self, value: Any = None) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class FakeWorkspace:
    """The state of a fake workspace, shared by its operations; ``calls`` is what was asked, in order."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.models: dict[tuple[str, str], Model] = {}
        self.endpoints: dict[str, ManagedOnlineEndpoint] = {}
        self.deployments: dict[str, dict[str, ManagedOnlineDeployment]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail_next_deployment = ""


class FakeModels:
    """``ml_client.models``: a create uploads the folder (a copy in storage) as a new version."""

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.ws = workspace

    def list(self, name: str | None = None, **_: Any) -> list[Model]:
        return [copy.deepcopy(m) for (n, _v), m in self.ws.models.items() if name in (None, n)]

    def get(self, name: str, version: str | None = None, **_: Any) -> Model:
        if (name, str(version)) not in self.ws.models:
            raise ResourceNotFoundError(f"model {name}:{version} not found")
        return copy.deepcopy(self.ws.models[(name, str(version))])

    def create_or_update(self, model: Model) -> Model:
        assert isinstance(model, Model) and model.type == "custom_model" and model.version
        self.ws.calls.append(("model", model.name, model.version))
        stored = copy.deepcopy(model)
        stored.path = str(self.ws.storage / model.name / model.version)
        shutil.copytree(model.path, stored.path)
        self.ws.models[(model.name, model.version)] = stored
        return copy.deepcopy(stored)


class FakeEndpoints:
    """``ml_client.online_endpoints``, with Azure's checks on names, auth and traffic."""

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.ws = workspace

    def get(self, name: str, **_: Any) -> ManagedOnlineEndpoint:
        if name not in self.ws.endpoints:
            raise ResourceNotFoundError(f"endpoint {name} not found")
        endpoint = copy.deepcopy(self.ws.endpoints[name])
        endpoint.traffic = {d: endpoint.traffic.get(d, 0) for d in self.ws.deployments[name]}  # as the SDK fills in
        return endpoint

    def begin_create_or_update(self, endpoint: ManagedOnlineEndpoint, **_: Any) -> FakePoller:
        assert isinstance(endpoint, ManagedOnlineEndpoint) and endpoint.auth_mode == "key"
        validate_endpoint_or_deployment_name(endpoint.name)
        deployments = self.ws.deployments.setdefault(endpoint.name, {})
        traffic = dict(endpoint.traffic or {})
        if set(traffic) - set(deployments) or sum(traffic.values()) not in (0, 100):
            raise HttpResponseError(message=f"Traffic {traffic} is not valid for deployments {sorted(deployments)}")
        self.ws.calls.append(("endpoint", endpoint.name, traffic))
        stored = copy.deepcopy(endpoint)
        stored._scoring_uri = f"https://{endpoint.name}.westeurope.inference.ml.azure.com/score"
        self.ws.endpoints[endpoint.name] = stored
        return FakePoller(copy.deepcopy(stored))

    def invoke(self, endpoint_name: str, *, request_file: str, deployment_name: str | None = None,
               **_: Any) -> str:
        """Runs the flow folder of the pinned deployment's model, as the promptflow runtime would serve it."""
        self.ws.calls.append(("invoke", endpoint_name, deployment_name))
        deployment = self.ws.deployments[endpoint_name][str(deployment_name)]
        _, name, version = str(deployment.model).split(":")
        folder = Path(str(self.ws.models[(name, version)].path))
        inputs = json.loads(Path(request_file).read_text(encoding="utf-8"))
        outcome = load_target(folder, folder).executor({}, {}, {}, None)(inputs)
        if outcome.outputs is None:
            raise HttpResponseError(message=f"(UserError) {outcome.error_type}: {outcome.error_message}\nCode: 400")
        return json.dumps(dict(outcome.outputs))


class FakeDeployments:
    """``ml_client.online_deployments``: a new deployment gets no traffic; one with traffic cannot be deleted."""

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.ws = workspace

    def list(self, endpoint_name: str, **_: Any) -> list[ManagedOnlineDeployment]:
        return [copy.deepcopy(d) for d in self.ws.deployments.get(endpoint_name, {}).values()]

    def begin_create_or_update(self, deployment: ManagedOnlineDeployment, **_: Any) -> FakePoller:
        assert isinstance(deployment, ManagedOnlineDeployment) and isinstance(deployment.environment, Environment)
        validate_endpoint_or_deployment_name(deployment.name, is_deployment=True)
        assert deployment.endpoint_name in self.ws.endpoints
        prefix, name, version = str(deployment.model).split(":")
        assert prefix == "azureml" and (name, version) in self.ws.models
        if self.ws.fail_next_deployment:
            raise HttpResponseError(message=self.ws.fail_next_deployment)
        self.ws.calls.append(("deployment", deployment.endpoint_name, deployment.name))
        stored = copy.deepcopy(deployment)
        stored._provisioning_state = "Succeeded"
        self.ws.deployments[deployment.endpoint_name][deployment.name] = stored
        return FakePoller(copy.deepcopy(stored))

    def begin_delete(self, name: str, endpoint_name: str, **_: Any) -> FakePoller:
        if self.ws.endpoints[endpoint_name].traffic.get(name):
            raise HttpResponseError(message=f"Deployment {name} has traffic; set it to 0 before deleting it")
        self.ws.calls.append(("delete", endpoint_name, name))
        del self.ws.deployments[endpoint_name][name]
        return FakePoller()


class FakeMLClient:
    """A fake standing in for Azure ML's ``MLClient`` (no Azure here): a workspace kept in memory."""

    def __init__(self, storage: Path) -> None:
        self.subscription_id, self.resource_group_name, self.workspace_name = "sub-1", "rg-1", "ws-1"
        self.workspace = FakeWorkspace(storage)
        self.models = FakeModels(self.workspace)
        self.online_endpoints = FakeEndpoints(self.workspace)
        self.online_deployments = FakeDeployments(self.workspace)


GREET_PY = '''\
from promptflow.core import tool


@tool
def greet(name: str, word: str) -> str:
    if word == "boom":
        raise ValueError("no greeting for " + name)
    return word + " " + name
'''

DAG = """\
inputs:
  name:
    type: string
outputs:
  greeting:
    type: string
    reference: ${greet.output}
nodes:
- name: greet
  type: python
  source:
    type: code
    path: greet.py
  inputs:
    name: ${inputs.name}
    word: WORD
"""


@pytest.fixture
def client(tmp_path: Path) -> FakeMLClient:
    return FakeMLClient(tmp_path / "blobstore")


@pytest.fixture
def target(client: FakeMLClient) -> AzureMLTarget:
    return AzureMLTarget(client)


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., DeploymentSpec]:
    """A spec whose packaged flow greets with ``word``; registered in MLflow unless ``registry`` says otherwise."""

    def make(deployment: str, word: str, registry: str = "mlflow", **settings: Any) -> DeploymentSpec:
        folder = tmp_path / "packages" / f"{deployment}-{word}"
        folder.mkdir(parents=True)
        (folder / "flow.dag.yaml").write_text(DAG.replace("WORD", word), encoding="utf-8")
        (folder / "greet.py").write_text(GREET_PY, encoding="utf-8")
        model = {"name": "summarize_flex", "version": "7", "content_hash": f"hash-{word}", "created": True,
                 "registry": registry}
        return DeploymentSpec("summarize_flex", deployment, "summarize_flex", folder, model,
                              {"aoai": "AzureOpenAIConnection"}, DeploymentSettings(**settings), tmp_path,
                              tmp_path / "out")

    return make


def deploy(target: AzureMLTarget, spec: DeploymentSpec) -> Deployment:
    """Deploys, then deletes the packaged folder as the release does: Azure must hold its own copy."""
    deployment = target.deploy(spec)
    shutil.rmtree(spec.folder)
    return deployment


def entity_text(value: Any, seen: set[int] | None = None) -> str:
    """Every field of an SDK entity (and of what it holds), as text."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return ""
    seen.add(id(value))
    if isinstance(value, dict):
        return " ".join(f"{k} {entity_text(v, seen)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return " ".join(entity_text(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return entity_text(vars(value), seen)
    return str(value)


def test_is_a_live_target(target: AzureMLTarget) -> None:
    as_protocol: Target = target  # what release.py holds; mypy checks the module itself
    assert (as_protocol.name, as_protocol.live) == ("azureml", True)


def test_first_deploy_creates_the_endpoint_with_key_auth_and_a_deployment_without_traffic(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    spec = make_spec("blue", "hello", endpoint_description="Summaries")
    assert target.traffic("summarize_flex") == {} and target.deployments("summarize_flex") == {}

    deployment = deploy(target, spec)

    endpoint = client.workspace.endpoints["summarize-flex"]
    assert (endpoint.auth_mode, endpoint.description) == ("key", "Summaries")
    assert deployment.endpoint == "summarize-flex" and deployment.name == "blue"
    assert deployment.model == {"name": "summarize_flex", "version": "1", "content_hash": "hash-hello"}
    assert deployment.url == "https://summarize-flex.westeurope.inference.ml.azure.com/score"
    assert target.traffic("summarize_flex") == {"blue": 0}
    assert target.deployments("summarize-flex") == {"blue": Deployment(
        "summarize-flex", "blue", deployment.model, deployment.url, detail="1 x Standard_F4s_v2, Succeeded")}
    model = client.models.get("summarize_flex", version="1")
    assert model.tags == {"model_hash": "hash-hello", "source_version": "7", "source_registry": "mlflow"}
    assert client.workspace.deployments["summarize-flex"]["blue"].model == "azureml:summarize_flex:1"


def test_green_beside_blue_takes_no_traffic_until_the_split_moves(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    deploy(target, make_spec("blue", "hello"))
    target.set_traffic("summarize_flex", {"blue": 100})
    green = deploy(target, make_spec("green", "hi"))

    assert green.model["version"] == "2"  # other content: a new model version
    assert target.traffic("summarize_flex") == {"blue": 100, "green": 0}
    target.set_traffic("summarize_flex", {"blue": 70, "green": 30})
    assert target.traffic("summarize_flex") == {"blue": 70, "green": 30}
    assert [call for call in client.workspace.calls if call[0] == "endpoint"] == [
        ("endpoint", "summarize-flex", {}), ("endpoint", "summarize-flex", {"blue": 100}),
        ("endpoint", "summarize-flex", {"blue": 70, "green": 30})]  # created once, never reset


def test_invoke_is_pinned_to_the_deployment_and_reads_the_flow_outputs(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec],
        _promptflow_loaded: None) -> None:
    deploy(target, make_spec("blue", "hello"))
    deploy(target, make_spec("green", "hi"))
    target.set_traffic("summarize_flex", {"blue": 100})

    assert target.invoke("summarize_flex", "green", {"name": "Ada"}) == {"greeting": "hi Ada"}
    assert target.invoke("summarize_flex", "blue", {"name": "Ada"}) == {"greeting": "hello Ada"}
    assert [call for call in client.workspace.calls if call[0] == "invoke"] == [
        ("invoke", "summarize-flex", "green"), ("invoke", "summarize-flex", "blue")]


def test_a_flow_that_raises_answers_with_a_one_line_deploy_error(
        target: AzureMLTarget, make_spec: Callable[..., DeploymentSpec], _promptflow_loaded: None) -> None:
    deploy(target, make_spec("blue", "boom"))
    with pytest.raises(DeployError) as raised:
        target.invoke("summarize_flex", "blue", {"name": "Ada"})
    message = str(raised.value)
    assert message.startswith("azureml: invoking summarize-flex/blue failed: (UserError) ")
    assert "no greeting for Ada" in message and "\n" not in message


def test_remove_moves_the_traffic_off_the_deployment_before_deleting_it(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    deploy(target, make_spec("blue", "hello"))
    deploy(target, make_spec("green", "hi"))
    target.set_traffic("summarize_flex", {"blue": 70, "green": 30})
    client.workspace.calls.clear()

    target.remove("summarize_flex", "green")

    assert client.workspace.calls == [("endpoint", "summarize-flex", {"blue": 100, "green": 0}),
                                      ("delete", "summarize-flex", "green")]
    assert target.traffic("summarize_flex") == {"blue": 100}
    assert list(target.deployments("summarize_flex")) == ["blue"]
    target.remove("summarize_flex", "green")  # gone already: nothing
    target.remove("elsewhere", "blue")
    assert len(client.workspace.calls) == 2


def test_removing_the_only_deployment_with_traffic_leaves_no_traffic(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    deploy(target, make_spec("blue", "hello"))
    target.set_traffic("summarize_flex", {"blue": 100})
    target.remove("summarize_flex", "blue")
    assert target.traffic("summarize_flex") == {} and client.workspace.calls[-1][0] == "delete"


@pytest.mark.parametrize("split, problem", [
    ({"blue": 50, "red": 50}, r"has no deployment red \(it has: blue, green\)"),
    ({"blue": 70, "green": 20}, "is not whole percents summing to 100"),
    ({"blue": 99.5, "green": 0.5}, "is not whole percents summing to 100"),
    ({"blue": True, "green": 99}, "is not whole percents summing to 100"),
    ({"blue": 150, "green": -50}, "is not whole percents summing to 100"),
])
def test_a_bad_split_is_refused_and_the_traffic_stays(
        target: AzureMLTarget, make_spec: Callable[..., DeploymentSpec], split: dict[str, Any], problem: str) -> None:
    deploy(target, make_spec("blue", "hello"))
    deploy(target, make_spec("green", "hi"))
    target.set_traffic("summarize_flex", {"blue": 100})
    with pytest.raises(DeployError, match=problem):
        target.set_traffic("summarize_flex", split)
    assert target.traffic("summarize_flex") == {"blue": 100, "green": 0}
    with pytest.raises(DeployError, match="there is no endpoint nowhere to set the traffic of"):
        target.set_traffic("nowhere", {"blue": 100})


def test_settings_land_in_the_deployment_entity(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    deploy(target, make_spec("green", "hi", instance_type="Standard_DS3_v2", instance_count=3,
                             deployment_description="Shorter summaries", base_image="myacr.azurecr.io/pf:1",
                             environment_variables={"LOG_LEVEL": "debug"}))
    entity = client.workspace.deployments["summarize-flex"]["green"]
    assert (entity.instance_type, entity.instance_count, entity.description) == (
        "Standard_DS3_v2", 3, "Shorter summaries")
    assert entity.environment_variables == {
        "LOG_LEVEL": "debug", "PROMPTFLOW_RUN_MODE": "serving",
        "PRT_CONFIG_OVERRIDE": "deployment.subscription_id=sub-1,deployment.resource_group=rg-1,"
                               "deployment.workspace_name=ws-1,deployment.endpoint_name=summarize-flex,"
                               "deployment.deployment_name=green"}
    assert entity.environment.image == "myacr.azurecr.io/pf:1" and entity.app_insights_enabled
    assert entity.environment.inference_config["scoring_route"] == {"path": "/score", "port": 8080}
    assert entity.environment.inference_config["readiness_route"] == {"path": "/health", "port": 8080}
    assert entity.tags == {"flow": "summarize_flex", "model_name": "summarize_flex", "model_version": "1",
                           "model_content_hash": "hash-hi"}

    deploy(target, make_spec("blue", "hello"))
    assert client.workspace.deployments["summarize-flex"]["blue"].environment.image == DEFAULT_IMAGE


def test_a_model_of_the_azureml_registry_is_referenced_not_uploaded_again(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    spec = make_spec("blue", "hello", registry="azureml")
    registered = AzureMLRegistry(client).register_flow("summarize_flex", spec.folder, "hash-hello", {})
    spec = DeploymentSpec(**{**vars(spec), "model": {**spec.model, "version": registered.version}})
    uploads = [call for call in client.workspace.calls if call[0] == "model"]

    deployment = deploy(target, spec)

    assert [call for call in client.workspace.calls if call[0] == "model"] == uploads
    entity = client.workspace.deployments["summarize-flex"]["blue"]
    assert entity.model == f"azureml:summarize_flex:{registered.version}"
    assert deployment.model["version"] == registered.version


def test_the_same_flow_from_another_registry_is_uploaded_once(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    first, again = deploy(target, make_spec("blue", "hello")), deploy(target, make_spec("green", "hello"))
    assert first.model == again.model and len([c for c in client.workspace.calls if c[0] == "model"]) == 1


def test_no_secret_reaches_any_entity(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec],
        monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AOAI_API_KEY", "APPLICATIONINSIGHTS_CONNECTION_STRING", "AZURE_CLIENT_SECRET"):
        monkeypatch.setenv(variable, SECRET)
    deploy(target, make_spec("blue", "hello"))
    target.set_traffic("summarize_flex", {"blue": 100})
    workspace = client.workspace
    text = entity_text([workspace.endpoints, workspace.deployments, workspace.models])
    assert "summarize-flex" in text and "PRT_CONFIG_OVERRIDE" in text  # the walk does reach the fields
    assert SECRET not in text


def test_an_sdk_failure_is_a_one_line_deploy_error(
        target: AzureMLTarget, client: FakeMLClient, make_spec: Callable[..., DeploymentSpec]) -> None:
    client.workspace.fail_next_deployment = "(BadRequest) Not enough quota for Standard_F4s_v2\nCode: BadRequest"
    with pytest.raises(DeployError) as raised:
        target.deploy(make_spec("blue", "hello"))
    assert str(raised.value) == ("azureml: deploying blue to summarize-flex failed: (BadRequest) Not enough quota "
                                 "for Standard_F4s_v2")


@pytest.mark.parametrize("name, expected", [
    ("summarize_flex", "summarize-flex"), ("Chat Bot v2", "chat-bot-v2"), ("2nd__flow-", "nd-flow"),
    ("a" * 40, "a" * 32), ("web-classification_with_a_long_name", "web-classification-with-a-long-n"),
])
def test_names_are_mapped_to_azures_rules(name: str, expected: str) -> None:
    assert azure_name(name) == expected == azure_name(expected)
    validate_endpoint_or_deployment_name(expected)


def test_a_name_that_cannot_be_mapped_says_what_to_set() -> None:
    with pytest.raises(DeployError, match="'qa' makes no Azure endpoint or deployment name .*; set ENDPOINT_NAME"):
        azure_name("qa")


def test_from_environment_names_the_missing_variables_in_one_line() -> None:
    with pytest.raises(SpecError) as raised:
        AzureMLTarget.from_environment({"SUBSCRIPTION_ID": "sub"})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("azureml target: RESOURCE_GROUP_NAME, WORKSPACE_NAME not set; set SUBSCRIPTION_ID, ")


def test_from_environment_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)  # as if azure-ai-ml were not installed
    with pytest.raises(SpecError, match=r"needs the 'azureml' extra \(azure.ai.ml is not installed\); fix: pip install "
                                        r"'pytest-promptflow\[azureml\]'"):
        AzureMLTarget.from_environment({"SUBSCRIPTION_ID": "s", "RESOURCE_GROUP_NAME": "r", "WORKSPACE_NAME": "w"})


def test_from_environment_builds_a_client_for_the_workspace() -> None:
    """MLClient and DefaultAzureCredential are built offline; nothing here contacts Azure."""
    target = AzureMLTarget.from_environment({"SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
                                             "RESOURCE_GROUP_NAME": "rg", "WORKSPACE_NAME": "ws"})
    assert type(target.ml_client).__name__ == "MLClient"
    assert (target.ml_client.resource_group_name, target.ml_client.workspace_name) == ("rg", "ws")


def test_importing_the_target_imports_no_azure() -> None:
    code = ("import sys, pytest_promptflow.deploy.azureml; "
            "print(sorted(m for m in sys.modules if m.startswith('azure')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
