"""Reading the GenAIOps template's ``deployment_config.json``: one section per target, entries per env.

The template's file has a list of entries per target kind (``azure_managed_endpoint``,
``kubernetes_endpoint``); we add ``local_endpoint`` and ``docker_endpoint``. The entry whose
``ENV_NAME`` is the session's ``--promptflow-env`` applies (the only entry, when there is one and
no env was given); an entry may name a ``FLOW`` (our key) to apply to that flow only. Keys are the
template's; ``PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION`` is honoured, where the template ignores it. ``TWIN``
(ours) names the flow's migrated agent-framework workflow (``maf:flows/x/workflow.py:create_workflow``):
the release deploys it instead of the flow, beside the deployment serving now (``deploy/stage.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import SpecError, Where
from .base import DeploymentSettings

SECTIONS = {"local": "local_endpoint", "docker": "docker_endpoint", "kubernetes": "kubernetes_endpoint",
            "azureml": "azure_managed_endpoint"}
_TEXT = {"ENDPOINT_NAME": "endpoint_name", "ENDPOINT_DESC": "endpoint_description",
         "DEPLOYMENT_DESC": "deployment_description", "CURRENT_DEPLOYMENT_NAME": "current_name",
         "PRIOR_DEPLOYMENT_NAME": "prior_name", "DEPLOYMENT_VM_SIZE": "instance_type", "CPU_ALLOCATION": "cpu",
         "MEMORY_ALLOCATION": "memory", "DEPLOYMENT_BASE_IMAGE_NAME": "base_image", "SERVICE_TYPE": "service_type",
         "COMPUTE_NAME": "compute_name", "TEST_FILE_PATH": "test_file", "TWIN": "twin"}
_NUMBERS = {"CURRENT_DEPLOYMENT_TRAFFIC_ALLOCATION": "current_traffic",
            "PRIOR_DEPLOYMENT_TRAFFIC_ALLOCATION": "prior_traffic", "DEPLOYMENT_INSTANCE_COUNT": "instance_count"}
#: keys read apart (ENV_NAME, FLOW, ENVIRONMENT_VARIABLES) or not at all (the conda file: a flow's
#: requirements.txt says what it needs here), accepted as they are
_OTHER = {"ENV_NAME", "FLOW", "DEPLOYMENT_CONDA_PATH", "ENVIRONMENT_VARIABLES"}


def deployment_settings(path: Path | None, target: str, env: str, flow: str) -> DeploymentSettings:
    """The settings for ``flow`` on ``target`` in ``env``; the defaults when the file or its entry is absent."""
    if path is None or not path.is_file():
        return DeploymentSettings()
    check(path, target)
    entries = _load(path).get(SECTIONS.get(target, f"{target}_endpoint"), [])
    for entry in sorted(entries, key=lambda e: not e.get("FLOW")):  # an entry for this flow before a general one
        if (entry.get("FLOW") or flow) != flow:
            continue
        if str(entry.get("ENV_NAME", "")) == env or (not env and len(entries) == 1):
            return _settings(entry, Where(path))
    return DeploymentSettings()


def env_names(path: Path | None) -> set[str]:
    """Every ``ENV_NAME`` an entry of any target's section names (none when the file is absent)."""
    if path is None or not path.is_file():
        return set()
    sections = _load(path).values()
    return {str(entry["ENV_NAME"]) for entries in sections if isinstance(entries, list)
            for entry in entries if isinstance(entry, dict) and entry.get("ENV_NAME")}


def check(path: Path | None, target: str) -> None:
    """Every entry of ``target``'s section read once, so a mistake stops the session before it runs."""
    if path is None or not path.is_file():
        return
    entries = _load(path).get(SECTIONS.get(target, f"{target}_endpoint"), [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SpecError(Where(path), f"{SECTIONS.get(target)} is not a list of objects",
                        'write "local_endpoint": [{"ENV_NAME": "dev", ...}]')
    for entry in entries:
        _settings(entry, Where(path))


def _load(path: Path) -> Mapping[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SpecError(Where(path, error.lineno), f"not valid JSON ({error.msg})", "fix the JSON") from None
    if not isinstance(document, dict):
        raise SpecError(Where(path), "is not a JSON object", 'write {"local_endpoint": [...]}')
    return document


def _settings(entry: Mapping[str, Any], where: Where) -> DeploymentSettings:
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in _TEXT:
            values[_TEXT[key]] = "" if value is None else str(value).strip()
        elif key in _NUMBERS:
            number = _number(key, value, where)
            if number is not None:
                values[_NUMBERS[key]] = number
        elif key not in _OTHER:
            known = ", ".join(sorted([*_TEXT, *_NUMBERS, *_OTHER]))
            raise SpecError(where, f"unknown key {key!r} in ENV_NAME {entry.get('ENV_NAME', '')!r}",
                            f"use one of {known}")
    variables = entry.get("ENVIRONMENT_VARIABLES") or {}
    if not isinstance(variables, dict):
        raise SpecError(where, "ENVIRONMENT_VARIABLES is not an object", 'write {"NAME": "value"}')
    values["environment_variables"] = {str(k): str(v) for k, v in variables.items()}
    settings = DeploymentSettings(**values)
    if not 0 <= settings.current_traffic <= 100 or not 0 <= (settings.prior_traffic or 0) <= 100 \
            or settings.current_traffic + (settings.prior_traffic or 0) > 100:
        raise SpecError(where, f"traffic allocations {settings.current_traffic} + {settings.prior_traffic or 0} "
                        "are not percentages summing to at most 100", "fix the *_TRAFFIC_ALLOCATION values")
    return settings


def _number(key: str, value: Any, where: Where) -> int | None:
    """A count or a percentage; the template writes some as strings, and "" for unset."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise SpecError(where, f"{key} is {value!r}, not a whole number", f"write e.g. \"{key}\": 100") from None
