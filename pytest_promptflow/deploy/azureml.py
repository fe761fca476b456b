"""Azure ML as a deployment target: a managed online endpoint, its deployments and their traffic split.

What the GenAIOps template's ``provision_endpoint.py`` and ``provision_deployment.py`` do, through
azure-ai-ml's ``MLClient`` (the ``azureml`` extra, imported inside the functions that need it):
the endpoint (key auth) is created only when missing, and an existing one is only ever updated
with its whole traffic map, since an update without it sets every deployment to 0 (template issue
#182). Each deployment runs the promptflow runtime image serving the flow as its model.

Names: Azure wants endpoint and deployment names of 3-32 characters, letters, digits and ``-``,
starting with a letter and not ending in ``-``. :func:`azure_name` lowercases a name, turns every
other run of characters into one ``-``, drops leading non-letters and keeps the first 32
(``summarize_flex`` -> ``summarize-flex``); every method maps the names it is given, so callers may
pass either form. An endpoint name is also a DNS name, unique in its Azure region: set
``ENDPOINT_NAME`` where a flow's name is too common.

Connections: nothing of a connection reaches Azure from here, no key in any entity. The deployment
names the workspace (``PRT_CONFIG_OVERRIDE``) and the promptflow runtime in serving mode resolves the
flow's connections by name from that workspace's connections, with the endpoint's managed identity,
as the template relies on: create workspace connections with the same names as the local ones, and
grant the endpoint's identity access to the workspace and its key vault (the template's RBAC step).
"""

from __future__ import annotations

import json
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from pytest_promptflow.deploy.base import DeployError, Deployment, DeploymentSpec
from pytest_promptflow.registry.azureml import AzureMLRegistry, workspace_client

DEFAULT_IMAGE = "mcr.microsoft.com/azureml/promptflow/promptflow-runtime:latest"
DEFAULT_INSTANCE_TYPE = "Standard_F4s_v2"
REQUEST_TIMEOUT_MS = 90_000  # the template's
#: The promptflow runtime image's routes (it is a bring-your-own-container deployment).
INFERENCE_CONFIG = {"liveness_route": {"path": "/health", "port": 8080},
                    "readiness_route": {"path": "/health", "port": 8080},
                    "scoring_route": {"path": "/score", "port": 8080}}


def azure_name(name: str) -> str:
    """``name`` as an Azure endpoint or deployment name (see the module docstring); idempotent."""
    text = re.sub(r"^[^a-z]+", "", re.sub(r"[^a-z0-9]+", "-", name.lower()))[:32].rstrip("-")
    if len(text) < 3:
        raise DeployError(f"azureml: {name!r} makes no Azure endpoint or deployment name (3-32 letters, digits "
                          f"or '-', starting with a letter); set ENDPOINT_NAME / CURRENT_DEPLOYMENT_NAME")
    return text


class AzureMLTarget:
    """The :class:`~pytest_promptflow.deploy.base.Target` of managed online endpoints in one workspace.

    ``spec.model`` is the registry's version (``name``, ``version``, ``content_hash``). With
    ``registry: "azureml"`` it is a model of this workspace and is deployed as
    ``azureml:<name>:<version>``; otherwise the packaged folder is uploaded as a ``custom_model`` of the
    same name, a new version only when the latest one's ``model_hash`` tag differs (the registry's rule).
    """

    name = "azureml"
    live = True

    def __init__(self, ml_client: Any) -> None:
        self.ml_client = ml_client

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AzureMLTarget:
        """The workspace that ``SUBSCRIPTION_ID``, ``RESOURCE_GROUP_NAME``, ``WORKSPACE_NAME`` name, as the
        registry reads them; authenticates with ``DefaultAzureCredential``."""
        return cls(workspace_client("azureml target", "to deploy to", environ))

    def deployments(self, endpoint: str) -> dict[str, Deployment]:
        name = azure_name(endpoint)
        with _sdk(f"listing the deployments of {name}"):
            found = self._endpoint(name)
            if found is None:
                return {}
            return {d.name: Deployment(name, d.name, _model_of(d), url=found.scoring_uri or "", detail=_detail(d))
                    for d in self.ml_client.online_deployments.list(endpoint_name=name)}

    def traffic(self, endpoint: str) -> dict[str, int]:
        name = azure_name(endpoint)
        with _sdk(f"reading the traffic of {name}"):
            found = self._endpoint(name)
        return {} if found is None else {key: int(value) for key, value in (found.traffic or {}).items()}

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        """Creates the endpoint if missing, then the deployment with no traffic, and waits until it is up."""
        from azure.ai.ml.entities import (
            Environment,
            ManagedOnlineDeployment,
            ManagedOnlineEndpoint,
            OnlineRequestSettings,
        )

        endpoint, deployment, settings = azure_name(spec.endpoint), azure_name(spec.deployment), spec.settings
        with _sdk(f"deploying {deployment} to {endpoint}"):
            if self._endpoint(endpoint) is None:
                self.ml_client.online_endpoints.begin_create_or_update(ManagedOnlineEndpoint(
                    name=endpoint, auth_mode="key", description=settings.endpoint_description)).result()
            model, reference = self._model(spec)
            variables = {**settings.environment_variables, "PROMPTFLOW_RUN_MODE": "serving",
                         "PRT_CONFIG_OVERRIDE": self._runtime_config(endpoint, deployment)}
            created = self.ml_client.online_deployments.begin_create_or_update(ManagedOnlineDeployment(
                name=deployment, endpoint_name=endpoint, model=reference,
                environment=Environment(image=settings.base_image or DEFAULT_IMAGE, inference_config=INFERENCE_CONFIG),
                instance_type=settings.instance_type or DEFAULT_INSTANCE_TYPE, instance_count=settings.instance_count,
                description=settings.deployment_description, environment_variables=variables,
                tags={"flow": spec.flow, **{f"model_{key}": value for key, value in model.items()}},
                app_insights_enabled=True,
                request_settings=OnlineRequestSettings(request_timeout_ms=REQUEST_TIMEOUT_MS))).result()
            found = self._endpoint(endpoint)
        return Deployment(endpoint, deployment, model, url=(found.scoring_uri or "") if found else "",
                          detail=_detail(created))

    def invoke(self, endpoint: str, deployment: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """One request pinned to ``deployment`` (the SDK sends ``base.PIN_HEADER``), whatever the split."""
        name, pinned = azure_name(endpoint), azure_name(deployment)
        with tempfile.TemporaryDirectory(prefix="pytest-promptflow-") as folder:
            request = Path(folder) / "request.json"
            request.write_text(json.dumps(dict(inputs), default=str), encoding="utf-8")
            with _sdk(f"invoking {name}/{pinned}"):
                answer = self.ml_client.online_endpoints.invoke(endpoint_name=name, deployment_name=pinned,
                                                                request_file=str(request))
        try:
            outputs = json.loads(answer)
        except (TypeError, ValueError):
            outputs = None
        if not isinstance(outputs, dict):
            raise DeployError(f"azureml: {name}/{pinned} answered {str(answer)[:200]!r}, not a JSON object")
        return outputs

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        name = azure_name(endpoint)
        wanted = {azure_name(deployment): percent for deployment, percent in split.items()}
        with _sdk(f"setting the traffic of {name}"):
            found = self._endpoint(name)
            if found is None:
                raise DeployError(f"azureml: there is no endpoint {name} to set the traffic of")
            known = self._names(name)
            unknown = sorted(set(wanted) - set(known))
            if unknown:
                raise DeployError(f"azureml: {name} has no deployment {', '.join(unknown)} "
                                  f"(it has: {', '.join(sorted(known)) or 'none'})")
            if any(type(p) is not int or not 0 <= p <= 100 for p in wanted.values()) or sum(wanted.values()) != 100:
                raise DeployError(f"azureml: traffic {dict(split)} for {name} is not whole percents summing to 100")
            found.traffic = {deployment: wanted.get(deployment, 0) for deployment in known}
            self.ml_client.online_endpoints.begin_create_or_update(found).result()

    def remove(self, endpoint: str, deployment: str) -> None:
        """Deletes the deployment; a share of traffic it held first moves to the busiest other deployment
        (all stay 0 if none has any), since Azure refuses to delete a deployment that has traffic."""
        name, gone = azure_name(endpoint), azure_name(deployment)
        with _sdk(f"removing {gone} from {name}"):
            found = self._endpoint(name)
            if found is None or gone not in self._names(name):
                return
            traffic = {key: int(value) for key, value in (found.traffic or {}).items()}
            share = traffic.pop(gone, 0)
            if share:
                busiest = max(traffic, key=lambda key: traffic[key], default=None)
                if busiest is not None and traffic[busiest]:
                    traffic[busiest] += share
                found.traffic = {**traffic, gone: 0}
                self.ml_client.online_endpoints.begin_create_or_update(found).result()
            self.ml_client.online_deployments.begin_delete(name=gone, endpoint_name=name).result()

    def _endpoint(self, name: str) -> Any | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self.ml_client.online_endpoints.get(name=name)
        except ResourceNotFoundError:
            return None

    def _names(self, endpoint: str) -> list[str]:
        return [d.name for d in self.ml_client.online_deployments.list(endpoint_name=endpoint)]

    def _model(self, spec: DeploymentSpec) -> tuple[dict[str, str], str]:
        """The model's record for the deployment's tags, and its ``azureml:<name>:<version>`` reference."""
        name, content_hash = str(spec.model.get("name") or spec.flow), str(spec.model.get("content_hash", ""))
        version = str(spec.model.get("version", ""))
        if spec.model.get("registry") != "azureml":
            tags = {"source_version": version, "source_registry": str(spec.model.get("registry", ""))}
            try:
                version = AzureMLRegistry(self.ml_client).register_flow(name, spec.folder, content_hash, tags).version
            except RuntimeError as error:
                raise DeployError(str(error)) from None
        return {"name": name, "version": version, "content_hash": content_hash}, f"azureml:{name}:{version}"

    def _runtime_config(self, endpoint: str, deployment: str) -> str:
        """``PRT_CONFIG_OVERRIDE``: where the serving runtime finds its workspace (and its connections)."""
        client = self.ml_client
        return (f"deployment.subscription_id={client.subscription_id},"
                f"deployment.resource_group={client.resource_group_name},"
                f"deployment.workspace_name={client.workspace_name},"
                f"deployment.endpoint_name={endpoint},deployment.deployment_name={deployment}")


def _model_of(deployment: Any) -> dict[str, str]:
    """What a deployment serves, from the tags ``deploy`` put on it."""
    tags = deployment.tags or {}
    return {key: tags.get(f"model_{key}", "") for key in ("name", "version", "content_hash")}


def _detail(deployment: Any) -> str:
    return (f"{deployment.instance_count} x {deployment.instance_type}"
            f"{f', {deployment.provisioning_state}' if deployment.provisioning_state else ''}")


@contextmanager
def _sdk(step: str) -> Iterator[None]:
    """An Azure SDK error during ``step`` as a one-line DeployError (the SDK's messages hold no key)."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except AzureError as error:
        first = (str(getattr(error, "message", "") or error).strip().splitlines() or [type(error).__name__])[0]
        raise DeployError(f"azureml: {step} failed: {first[:300]}") from None
