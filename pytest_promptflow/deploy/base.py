"""What every deployment target does for a release, wherever it deploys.

An *endpoint* (one per released flow) has named *deployments* (``blue``, ``green``) and a traffic
split between them in percent, as Azure ML online endpoints have. A release deploys the new flow
version as a deployment that takes no traffic, tests it, and only then moves traffic to it; if the
test fails the deployment is removed and the split stays as it was.

Targets whose deployments answer requests from here (``live``: local, Azure ML) are tested over
their endpoint; the others (Docker build contexts, Kubernetes manifests) only write what a later
step ships, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

#: The request header that sends a request to one deployment, whatever the split (Azure ML's name).
PIN_HEADER = "azureml-model-deployment"


class DeployError(Exception):
    """A deployment step failed; the message says which and why (never a secret)."""


@dataclass(frozen=True)
class DeploymentSettings:
    """One entry of the GenAIOps template's ``deployment_config.json`` (keys as the template names them).

    Names left empty are chosen by the release: the new deployment is ``blue`` or ``green``,
    whichever the endpoint is not serving from; the prior one is the one serving the most traffic.
    """

    endpoint_name: str = ""  # ENDPOINT_NAME; "" = the flow's name
    endpoint_description: str = ""  # ENDPOINT_DESC
    deployment_description: str = ""  # DEPLOYMENT_DESC
    current_name: str = ""  # CURRENT_DEPLOYMENT_NAME
    current_traffic: int = 100  # CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION
    prior_name: str = ""  # PRIOR_DEPLOYMENT_NAME
    prior_traffic: int | None = None  # PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION; None = 100 - current
    instance_type: str = ""  # DEPLOYMENT_VM_SIZE
    instance_count: int = 1  # DEPLOYMENT_INSTANCE_COUNT
    cpu: str = ""  # CPU_ALLOCATION (Kubernetes)
    memory: str = ""  # MEMORY_ALLOCATION (Kubernetes)
    base_image: str = ""  # DEPLOYMENT_BASE_IMAGE_NAME
    service_type: str = ""  # SERVICE_TYPE (Kubernetes)
    compute_name: str = ""  # COMPUTE_NAME (Kubernetes compute attached to Azure ML)
    test_file: str = ""  # TEST_FILE_PATH: a sample request, sent once as a readiness probe
    environment_variables: Mapping[str, str] = field(default_factory=dict)  # ENVIRONMENT_VARIABLES
    twin: str = ""  # TWIN (ours): the flow's migrated workflow, maf:path.py:factory, deployed in its place (cut-over)


@dataclass(frozen=True)
class DeploymentSpec:
    """What to deploy: a packaged, registered flow as deployment ``deployment`` of ``endpoint``."""

    endpoint: str
    deployment: str
    flow: str
    folder: Path  # the packaged flow; a temporary folder, so a target copies what it keeps
    model: Mapping[str, Any]  # the registry's version: name, version, content_hash, created
    connections: Mapping[str, str]  # connection name -> promptflow type; never a key
    settings: DeploymentSettings
    project_dir: Path  # where a target keeps its state and a served flow finds ``.env``
    output_dir: Path  # where built artifacts (Docker context, manifests) are written


@dataclass(frozen=True)
class Deployment:
    """A deployment as a target reports it."""

    endpoint: str
    name: str
    model: Mapping[str, Any]  # name, version, content_hash of the flow version it serves
    url: str = ""  # where it answers, if anywhere ("" for built-only targets)
    files: tuple[str, ...] = ()  # what was written (Docker context, manifests)
    detail: str = ""  # one line for the terminal, e.g. "pid 123 on 127.0.0.1:50123"

    def as_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "name": self.name, "model": dict(self.model), "url": self.url,
                "files": list(self.files), "detail": self.detail}


class Target(Protocol):
    """A place a release deploys to. ``live`` targets answer requests from this machine."""

    name: str
    live: bool

    def deployments(self, endpoint: str) -> dict[str, Deployment]:
        """The endpoint's current deployments by name (empty if the endpoint does not exist); on a live
        target, one that does not answer now has no ``url`` (a release deploys it again)."""

    def traffic(self, endpoint: str) -> dict[str, int]:
        """The endpoint's split in percent by deployment name (empty if it does not exist)."""

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        """Creates (or replaces) deployment ``spec.deployment`` serving ``spec.folder``, with no traffic
        (the endpoint is created if needed) and ready to answer; raises DeployError if it cannot."""

    def invoke(self, endpoint: str, deployment: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The flow outputs of one request sent to that deployment only; raises DeployError on an
        error answer."""

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        """Sets the split (percent by deployment, summing to 100); deployments not named get 0."""

    def remove(self, endpoint: str, deployment: str) -> None:
        """Deletes one deployment and frees what it held (process, port); nothing if it is gone."""
