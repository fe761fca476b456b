"""The Kubernetes target: a release's Docker build context and the manifests that run it, blue/green.

Per endpoint, ``output_dir/<endpoint>/manifests.yaml`` holds, for each deployment, a Deployment and
a Service named ``<endpoint>-<deployment>``, then the endpoint's Service (``<endpoint>``, of the
template's SERVICE_TYPE) and a Gateway API HTTPRoute whose backend weights are the traffic split.
The route's parent is the endpoint Service (the Gateway API's mesh mode, GAMMA); to expose it
through a Gateway, add that Gateway to its ``parentRefs``.

Names are made valid DNS labels (lowercase, '-', at most 63 characters; see ``dns_name``), so flow
``summarize_flex`` is endpoint ``summarize-flex``. Connection credentials come from the Secret
``<endpoint>-connections`` (keys named like the variables, e.g. ``AOAI_API_KEY``), which these
manifests only reference: create it in the cluster; no value is ever written here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Deployment, DeploymentSpec
from .docker import SERVING_PORT, BuiltTarget, build_context, connection_env, dns_name, image_tag, write_yaml

MANIFESTS = "manifests.yaml"
SERVICE_PORT = 80


class KubernetesTarget(BuiltTarget):
    """Writes each deployment's Docker context to ``output_dir/<endpoint>/<deployment>/`` and the
    endpoint's manifests beside them; the image is ``<image_registry>/<endpoint>:<model version>``."""

    name = "kubernetes"
    serves_nothing = "kubernetes target writes manifests; it serves nothing here (apply them with kubectl)"

    def __init__(self, output_dir: Path, image_registry: str = "") -> None:
        super().__init__(output_dir)
        self.image_registry = image_registry.rstrip("/")

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        folder = self.output_dir / spec.endpoint
        context = build_context(spec, folder / spec.deployment)
        tag = image_tag(spec.endpoint, spec.model)
        image = f"{self.image_registry}/{tag}" if self.image_registry else tag
        secret = dns_name(f"{spec.endpoint}-connections")
        needed = sorted(variable for connection, kind in spec.connections.items()
                        for variable, required in connection_env(connection, kind).items() if required)
        detail = f"wrote {folder / MANIFESTS}; build image {image} from {folder / spec.deployment}"
        if needed:
            detail += f"; needs Secret {secret} with {', '.join(needed)}"
        return self._record(spec, {"files": [str(path) for path in (*context, folder / MANIFESTS)],
                                   "detail": detail, "objects": deployment_objects(spec, image)},
                            service_type=spec.settings.service_type)

    def _save(self, endpoint: str, state: dict[str, Any]) -> None:
        super()._save(endpoint, state)
        path = self.output_dir / endpoint / MANIFESTS
        if not state["deployments"]:
            path.unlink(missing_ok=True)
            return
        objects = [obj for name in sorted(state["deployments"]) for obj in state["deployments"][name]["objects"]]
        write_yaml(path, *objects, *endpoint_objects(endpoint, state))


def deployment_objects(spec: DeploymentSpec, image: str) -> list[dict[str, Any]]:
    """The Deployment and Service of one deployment."""
    settings = spec.settings
    name = dns_name(f"{spec.endpoint}-{spec.deployment}")
    labels = {"app": dns_name(spec.endpoint), "deployment": dns_name(spec.deployment)}
    secret = dns_name(f"{spec.endpoint}-connections")
    env: list[dict[str, Any]] = [{"name": key, "value": str(value)}
                                 for key, value in sorted(settings.environment_variables.items())]
    for connection, kind in sorted(spec.connections.items()):
        for variable, needed in connection_env(connection, kind).items():
            ref = {"name": secret, "key": variable, **({} if needed else {"optional": True})}
            env.append({"name": variable, "valueFrom": {"secretKeyRef": ref}})
    container: dict[str, Any] = {
        "name": "promptflow", "image": image, "ports": [{"name": "http", "containerPort": SERVING_PORT}], "env": env,
        "readinessProbe": _probe(initial=10, period=10), "livenessProbe": _probe(initial=30, period=30)}
    amounts = {key: value for key, value in (("cpu", settings.cpu), ("memory", settings.memory)) if value}
    if amounts:
        container["resources"] = {"requests": amounts, "limits": dict(amounts)}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": settings.instance_count, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}
    return [deployment, _service(name, labels)]


def endpoint_objects(endpoint: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The endpoint's Service and the HTTPRoute that splits its traffic by weight."""
    name = dns_name(endpoint)
    service = _service(name, {"app": name})
    if state.get("service_type"):
        service["spec"]["type"] = state["service_type"]
    backends = [{"name": dns_name(f"{endpoint}-{deployment}"), "port": SERVICE_PORT, "weight": weight}
                for deployment, weight in sorted(state["traffic"].items())]
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": name, "labels": {"app": name}},
             "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": name, "port": SERVICE_PORT}],
                      "rules": [{"backendRefs": backends}]}}
    return [service, route]


def _service(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": dict(selector)},
            "spec": {"selector": dict(selector),
                     "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http"}]}}


def _probe(initial: int, period: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": SERVING_PORT},
            "initialDelaySeconds": initial, "periodSeconds": period}
