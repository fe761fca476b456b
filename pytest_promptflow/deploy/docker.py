"""The Docker target: the build context of ``pf flow build --format docker`` for a release, and
``docker build`` when a Docker engine answers.

promptflow's own build copies the flow and renders its Dockerfile, runit scripts and start.sh; it
also exports every connection from its local (keyring) connection store. That store is not ours to
read or write, so the connection files are written here from each connection's name and type, with
the credentials as ``${env:...}`` placeholders named as ``llm/connections.py`` reads them
(``AOAI_API_KEY``, ``AOAI_API_BASE``): the image takes them from its environment when it serves,
and no secret is ever written. Also shared with the Kubernetes target: names, state, the split.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..extras import require
from ..llm.connections import AZURE, DEFAULT_API_VERSION, OPENAI, env_prefix
from .base import DeployError, Deployment, DeploymentSpec

STATE_FILE = "endpoint.json"
#: Where the image's gunicorn listens (promptflow's runit script and ``EXPOSE``).
SERVING_PORT = 8080
PROBE_SECONDS = 5
_SCHEMA = "https://azuremlschemas.azureedge.net/promptflow/latest/{}.schema.json"


def dns_name(name: str) -> str:
    """``name`` as a DNS-1035 label (Kubernetes object names, image names): lowercase letters, digits
    and '-', starting with a letter, at most 63 characters; e.g. ``summarize_flex`` -> ``summarize-flex``.
    A name cut to fit ends in a hash of the whole, so two long names stay apart."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    label = label if label[:1].isalpha() else f"pf-{label}".rstrip("-")
    if len(label) > 63:
        label = f"{label[:54].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return label


def image_tag(endpoint: str, model: Mapping[str, Any]) -> str:
    """``<endpoint>:<model version>``, both made valid for Docker."""
    version = re.sub(r"[^A-Za-z0-9_.-]", "-", str(model.get("version", "")))[:128].lstrip(".-")
    return f"{dns_name(endpoint)}:{version or 'latest'}"


def connection_env(name: str, kind: str) -> dict[str, bool]:
    """The variables the image reads connection ``name`` from -> whether it needs them (an Azure
    connection's version and type have defaults, which promptflow's serving overrides from them)."""
    if kind not in (AZURE, OPENAI):
        raise DeployError(f"connection {name!r} has type {kind!r}; a deployed image reads only {AZURE} and {OPENAI}")
    prefix = env_prefix(name)
    optional = ("API_VERSION", "API_TYPE") if kind == AZURE else ()
    return {f"{prefix}_{key}": key not in optional for key in ("API_KEY", "API_BASE", *optional)}


def connection_file(name: str, kind: str) -> dict[str, str]:
    """A connection yaml as ``pf connection create --file`` takes it, credentials as placeholders."""
    key, base = (f"${{env:{variable}}}" for variable in list(connection_env(name, kind))[:2])
    head = {"$schema": _SCHEMA.format(kind), "type": "open_ai" if kind == OPENAI else "azure_open_ai", "name": name,
            "module": "promptflow.connections", "api_key": key}
    if kind == OPENAI:
        return {**head, "base_url": base}
    return {**head, "api_base": base, "api_type": "azure", "api_version": DEFAULT_API_VERSION, "auth_mode": "key"}


def write_yaml(path: Path, *documents: Mapping[str, Any]) -> None:
    """Block style, keys in the order given, no anchors or wrapped lines, documents separated by ``---``."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.representer.ignore_aliases = lambda data: True
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        yaml.dump_all([dict(document) for document in documents], stream)


def build_context(spec: DeploymentSpec, dest: Path) -> list[Path]:
    """Writes the Docker build context of ``spec.folder`` into ``dest`` (replaced); returns its files.

    promptflow writes ``flow/`` (its build, or a plain copy of a flex flow whose entry signature it
    cannot infer; serving does not need it) and, from its templates, Dockerfile, start.sh, runit/ and
    README.md; here are written ``connections/<name>.yaml`` and ``settings.json`` (the variables to set).
    """
    from ..flows import load_promptflow

    load_promptflow()  # PF home in a temp folder, telemetry off: ~/.promptflow is never written
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    connections = []
    variables: dict[str, bool] = {}
    for name, kind in sorted(spec.connections.items()):
        variables.update(connection_env(name, kind))
        connections.append(f"connections/{name.replace(' ', '_')}.yaml")
        write_yaml(dest / connections[-1], connection_file(name, kind))
    (dest / "settings.json").write_text(json.dumps(dict.fromkeys(sorted(variables), ""), indent=2) + "\n",
                                        encoding="utf-8")
    with warnings.catch_warnings():  # promptflow's schemas warn about marshmallow internals
        warnings.simplefilter("ignore")
        import promptflow._sdk
        from promptflow._sdk._pf_client import PFClient
        from promptflow._sdk._utilities.general_utils import copy_tree_respect_template_and_ignore_file
        from promptflow._utils.flow_utils import resolve_flow_path
        from promptflow.core._errors import GenerateFlowMetaJsonError
        from promptflow.exceptions import PromptflowException

        flows = PFClient().flows
        flow_dir, flow_file = resolve_flow_path(spec.folder, allow_prompty_dir=True)
        try:
            flows.build(flow=flow_dir / flow_file, output=dest / "flow", format="docker", flow_only=True)
        except GenerateFlowMetaJsonError:
            shutil.rmtree(dest / "flow")
            shutil.copytree(spec.folder, dest / "flow")
        except PromptflowException as error:
            raise DeployError(f"promptflow cannot build flow {spec.flow!r}: {error}") from None
        environment = flows._build_environment_config(dest / "flow" / flow_file)
        if spec.settings.base_image:
            environment["image"] = spec.settings.base_image
        copy_tree_respect_template_and_ignore_file(  # rendered as promptflow's _export_to_docker does
            source=Path(promptflow._sdk.__file__).parent / "data" / "docker", target=dest,
            render_context={"env": environment, "flow_name": spec.flow, "local_db_rel_path": "",
                            "connection_yaml_paths": connections})
    return sorted(path for path in dest.rglob("*") if path.is_file())


def read_state(folder: Path) -> dict[str, Any]:
    """An endpoint's state: ``deployments`` (name -> model, files, detail, ...) and ``traffic``."""
    path = folder / STATE_FILE
    if not path.is_file():
        return {"deployments": {}, "traffic": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DeployError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); fix it, or delete the "
                          "endpoint's folder to start it afresh") from None


def checked_split(endpoint: str, names: Iterable[str], split: Mapping[str, int]) -> dict[str, int]:
    """``split`` over every deployment in ``names`` (those not named get 0), or DeployError."""
    known = sorted(names)
    unknown = sorted(set(split) - set(known))
    if unknown:
        raise DeployError(f"traffic split names {', '.join(unknown)}, which endpoint {endpoint!r} does not have "
                          f"(deployments: {', '.join(known) or 'none'})")
    if any(type(value) is not int or value < 0 for value in split.values()) or sum(split.values()) != 100:
        raise DeployError(f"traffic split {dict(split)} for endpoint {endpoint!r} is not whole percentages "
                          "summing to 100")
    return {name: split.get(name, 0) for name in known}


class BuiltTarget:
    """What the built-only targets share: per endpoint a folder with one folder per deployment and
    a state file of what earlier releases built and the split they set."""

    name = ""
    live = False
    serves_nothing = ""

    def __init__(self, output_dir: Path) -> None:
        require("deploy", f"the {self.name} target", modules=("promptflow",))  # promptflow builds the image's context
        self.output_dir = Path(output_dir)

    def deployments(self, endpoint: str) -> dict[str, Deployment]:
        return {name: _deployment(endpoint, name, record)
                for name, record in read_state(self.output_dir / endpoint)["deployments"].items()}

    def traffic(self, endpoint: str) -> dict[str, int]:
        return dict(read_state(self.output_dir / endpoint)["traffic"])

    def invoke(self, endpoint: str, deployment: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        raise DeployError(self.serves_nothing)

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        state = read_state(self.output_dir / endpoint)
        state["traffic"] = checked_split(endpoint, state["deployments"], split)
        self._save(endpoint, state)

    def remove(self, endpoint: str, deployment: str) -> None:
        state = read_state(self.output_dir / endpoint)
        if deployment not in state["deployments"]:
            return
        shutil.rmtree(self.output_dir / endpoint / deployment, ignore_errors=True)
        del state["deployments"][deployment]
        state["traffic"].pop(deployment, None)
        self._save(endpoint, state)

    def _record(self, spec: DeploymentSpec, record: dict[str, Any], **endpoint: Any) -> Deployment:
        """Stores deployment ``spec.deployment`` (model, files, detail, ...) with no traffic, and ``endpoint``
        (what the endpoint as a whole takes from its latest deployment)."""
        state = {**read_state(self.output_dir / spec.endpoint), **endpoint}
        state["deployments"][spec.deployment] = {"model": dict(spec.model), **record}
        state["traffic"][spec.deployment] = 0
        self._save(spec.endpoint, state)
        return _deployment(spec.endpoint, spec.deployment, state["deployments"][spec.deployment])

    def _save(self, endpoint: str, state: dict[str, Any]) -> None:
        text = json.dumps(state, indent=2, sort_keys=True, default=str)
        (self.output_dir / endpoint).mkdir(parents=True, exist_ok=True)
        (self.output_dir / endpoint / STATE_FILE).write_text(text + "\n", encoding="utf-8")


def _deployment(endpoint: str, name: str, record: Mapping[str, Any]) -> Deployment:
    return Deployment(endpoint, name, record["model"], files=tuple(record["files"]), detail=record["detail"])


class DockerTarget(BuiltTarget):
    """Writes a deployment's Docker build context to ``output_dir/<endpoint>/<deployment>/`` and builds
    ``<endpoint>:<model version>`` from it when a Docker engine answers (``engine=None`` asks it)."""

    name = "docker"
    serves_nothing = "docker target builds images; it serves nothing here"

    def __init__(self, output_dir: Path, engine: bool | None = None) -> None:
        super().__init__(output_dir)
        self.engine = engine

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        context = self.output_dir / spec.endpoint / spec.deployment
        files = build_context(spec, context)
        tag = image_tag(spec.endpoint, spec.model)
        absent = "" if self.engine else "told not to build" if self.engine is False else engine_absent()
        detail = f"docker build skipped: no Docker engine ({absent})" if absent else _docker_build(tag, context)
        return self._record(spec, {"files": [str(path) for path in files], "detail": detail})


def engine_absent() -> str:
    """Why no Docker engine answers ``docker info`` within a few seconds (one line), or "" if one does."""
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return f"docker info did not answer within {PROBE_SECONDS} s"
    if done.returncode == 0:
        return ""
    lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"docker info exited with {done.returncode}"


def _docker_build(tag: str, context: Path) -> str:
    try:
        done = subprocess.run(["docker", "build", "-t", tag, "."], cwd=context, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    except OSError as error:
        raise DeployError(f"docker build -t {tag} {context} could not start: {error}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stdout.rstrip().splitlines()[-15:])
        raise DeployError(f"docker build -t {tag} {context} failed (exit {done.returncode}):\n{tail}")
    return f"built image {tag} from {context}"
