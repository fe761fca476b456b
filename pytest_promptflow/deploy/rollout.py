"""Blue/green for each released flow: deploy beside what serves, test, then move traffic or roll back.

The new deployment is named by ``CURRENT_DEPLOYMENT_NAME``, else it is whichever of blue and green
is not the prior one; the prior one is ``PRIOR_DEPLOYMENT_NAME``, else the deployment serving the
most traffic. A first deployment takes all traffic; later ones take
``CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION`` and the prior one ``PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION``
(default: the rest). A flow whose released version already serves traffic is left alone, unless it
does not answer there: then it is deployed again under its name and gets its share back once tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .base import DeployError, Deployment, DeploymentSettings, DeploymentSpec, Target

COLOURS = ("blue", "green")


@dataclass
class Rollout:
    """One flow's way to traffic, and what happened on it (the release record's ``deployment``)."""

    flow: str
    target: Target
    endpoint: str
    deployment: str
    prior: str | None
    split: dict[str, int]  # set when the endpoint test passes
    previous: dict[str, int]  # the split before; restored on failure
    status: str = "planned"
    deployed: Deployment | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    endpoint_url: str = ""  # where clients send requests once it serves (the local router's /score)

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target.name, "endpoint": self.endpoint, "deployment": self.deployment,
                **({"endpoint_url": self.endpoint_url} if self.endpoint_url else {}),
                "prior": self.prior, "split": self.split, "previous_split": self.previous, "status": self.status,
                "failures": self.failures, "notes": self.notes,
                **({"url": self.deployed.url, "files": list(self.deployed.files), "detail": self.deployed.detail}
                   if self.deployed else {})}


def plan(target: Target, flow: str, settings: DeploymentSettings, model: Mapping[str, Any]) -> Rollout:
    """Names and split for deploying ``model`` of ``flow``; status "unchanged" if it already serves."""
    endpoint = settings.endpoint_name or flow
    existing = target.deployments(endpoint)
    previous = {name: share for name, share in target.traffic(endpoint).items() if share}
    serving = [d for d in existing.values() if previous.get(d.name)
               and d.model.get("content_hash") == model.get("content_hash")]
    if serving and (serving[0].url or not target.live):
        return Rollout(flow, target, endpoint, serving[0].name, None, previous, previous, status="unchanged",
                       deployed=serving[0])
    if serving:
        return _redeploy(flow, target, endpoint, serving[0], previous)
    prior = settings.prior_name or (max(previous, key=lambda name: previous[name]) if previous else None)
    name = settings.current_name or next(c for c in COLOURS if c != prior)
    if name == prior:
        raise DeployError(f"the new deployment and the prior one are both {name!r}: name two different deployments "
                          "(CURRENT_DEPLOYMENT_NAME, PRIOR_DEPLOYMENT_NAME)")
    if prior is not None and prior not in existing and previous:
        raise DeployError(f"PRIOR_DEPLOYMENT_NAME {prior!r} is not a deployment of endpoint {endpoint} (it has: "
                          f"{', '.join(sorted(existing))}): name one of those, or leave it empty")
    if prior is None or prior not in existing:  # nothing serves: the endpoint's first deployment
        return Rollout(flow, target, endpoint, name, None, {name: 100}, previous)
    current = settings.current_traffic
    rest = 100 - current if settings.prior_traffic is None else settings.prior_traffic
    if current + rest != 100:
        raise DeployError(f"traffic {name} {current} + {prior} {rest} is not 100: fix the *_TRAFFIC_ALLOCATION values")
    return Rollout(flow, target, endpoint, name, prior, {name: current, prior: rest}, previous)


def _redeploy(flow: str, target: Target, endpoint: str, dead: Deployment, previous: dict[str, int]) -> Rollout:
    """The released version serves traffic but does not answer: the same deployment again, the split as it was;
    meanwhile its share goes to the other deployment with the most traffic, if any (``deploy``)."""
    others = {name: share for name, share in previous.items() if name != dead.name}
    prior = max(others, key=lambda name: others[name]) if others else None
    rollout = Rollout(flow, target, endpoint, dead.name, prior, previous, previous)
    rollout.notes.append(f"{dead.name} served {previous[dead.name]}% but did not answer ({dead.detail}): "
                         "deployed it again")
    return rollout


def deploy(rollout: Rollout, spec: DeploymentSpec) -> None:
    """The new deployment, next to the serving ones and with no traffic. A deployment of the same name
    that serves some traffic hands its share to the prior one first (it is being replaced)."""
    share = rollout.previous.get(rollout.deployment)
    if share and rollout.prior:
        moved = {name: value for name, value in rollout.previous.items() if name != rollout.deployment}
        moved[rollout.prior] = moved.get(rollout.prior, 0) + share
        rollout.target.set_traffic(rollout.endpoint, moved)
        rollout.notes.append(f"{rollout.deployment} served {share}%: moved to {rollout.prior} before replacing it")
        rollout.previous = moved
    rollout.deployed = rollout.target.deploy(spec)
    rollout.status = "deployed"


def promote(rollout: Rollout) -> None:
    rollout.target.set_traffic(rollout.endpoint, rollout.split)
    rollout.status = "serving"


def roll_back(rollout: Rollout) -> None:
    """The new deployment removed, the previous split as it was; the endpoint too if it was new."""
    rollout.target.remove(rollout.endpoint, rollout.deployment)
    previous = {name: share for name, share in rollout.previous.items() if name != rollout.deployment}
    if previous:
        rollout.target.set_traffic(rollout.endpoint, previous)
    rollout.status = "rolled back"


def sample_request(settings: DeploymentSettings, config_file: Path | None) -> dict[str, Any] | None:
    """The template's TEST_FILE_PATH request (relative to deployment_config.json), sent once as a probe."""
    if not settings.test_file:
        return None
    path = Path(settings.test_file)
    if not path.is_absolute() and config_file is not None:
        path = config_file.parent / path
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as error:
        raise DeployError(f"{path}: TEST_FILE_PATH is not a readable JSON request ({error})") from None
