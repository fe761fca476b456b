"""The built-only targets: a release's Docker build context (promptflow's build, connections from
environment variables, no secret written) and its Kubernetes manifests (valid objects, the split as
HTTPRoute weights). ``docker`` here is either absent or a fake script that records how it was called."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from pytest_promptflow.deploy.base import DeployError, DeploymentSettings, DeploymentSpec
from pytest_promptflow.deploy.docker import DockerTarget, build_context, connection_file, dns_name
from pytest_promptflow.deploy.kubernetes import KubernetesTarget
from pytest_promptflow.flows import load_target
from pytest_promptflow.packaging import package_flow

SECRET = "sk-planted-0123456789"
K8S_VERSION = kubernetes_validate.latest_version()  # the newest Kubernetes schemas the package bundles
LLM_DAG = """\
inputs:
  text:
    type: string
outputs:
  answer:
    type: string
    reference: ${shout.output}
nodes:
- name: reply
  type: llm
  source:
    type: code
    path: reply.jinja2
  inputs:
    deployment_name: gpt-35-turbo
    text: ${inputs.text}
  provider: AzureOpenAI
  connection: aoai
  api: chat
  module: promptflow.tools.aoai
- name: shout
  type: python
  source:
    type: code
    path: shout.py
  inputs:
    text: ${reply.output}
"""
PYTHON_DAG = LLM_DAG.split("nodes:")[0] + """\
nodes:
- name: shout
  type: python
  source:
    type: code
    path: shout.py
  inputs:
    text: ${inputs.text}
"""
SHOUT_PY = "from promptflow.core import tool\n\n\n@tool\ndef shout(text: str) -> str:\n    return text.upper()\n"
FAKE_DOCKER = """\
#!{python}
# A fake docker: records its arguments and folder, then answers as told by FAKE_DOCKER_EXIT.
import json, os, sys
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
if sys.argv[1] == "info":
    print("Cannot connect to the Docker daemon. Is the docker daemon running?", file=sys.stderr)
    sys.exit(1)
print("\\n".join(f"step {{n}}" for n in range(40)))
sys.exit(int(os.environ.get("FAKE_DOCKER_EXIT", "0")))
"""


def write_flow(folder: Path, dag: str) -> Path:
    files = {"flow.dag.yaml": dag, "shout.py": SHOUT_PY, "reply.jinja2": "system:\nBe brief.\nuser:\n{{text}}\n",
             ".env": f'aoai={{"api_key": "{SECRET}", "api_base": "https://example.invalid"}}\n'}
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def make_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A spec over a packaged copy of a tiny flow (``tiny_llm`` names connection aoai), with a key
    planted in the environment and in the project's ``.env``."""
    monkeypatch.setenv("AOAI_API_KEY", SECRET)
    monkeypatch.setenv("AOAI_API_BASE", "https://planted.example.invalid")
    (tmp_path / ".env").write_text(f'aoai={{"api_key": "{SECRET}"}}\n', encoding="utf-8")
    packages = itertools.count()

    def make(deployment: str = "blue", flow: str = "tiny_llm", version: str = "3", **settings: Any) -> DeploymentSpec:
        source = tmp_path / "flows" / flow
        if not source.exists():
            write_flow(source, LLM_DAG if "llm" in flow else PYTHON_DAG)
        target = load_target(source, tmp_path)
        folder, digest = package_flow(target, {}, {}, tmp_path / "packages" / str(next(packages)))
        model = {"name": flow, "version": version, "content_hash": digest}
        return DeploymentSpec(flow, deployment, flow, folder, model, target.connections(),
                              DeploymentSettings(**settings), tmp_path, tmp_path / "out")

    return make


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``docker`` first on PATH; returns the log of its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable), encoding="utf-8")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    return tmp_path / "docker.log"


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def manifests(folder: Path) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe").load_all((folder / "manifests.yaml").read_text(encoding="utf-8"))]


def route_weights(folder: Path) -> dict[str, int]:
    route = next(doc for doc in manifests(folder) if doc["kind"] == "HTTPRoute")
    return {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}


def test_docker_context_is_promptflows_build_with_connections_from_environment_variables(make_spec, tmp_path):
    spec = make_spec()
    files = build_context(spec, tmp_path / "context")

    names = {path.relative_to(tmp_path / "context").as_posix() for path in files}
    assert {"Dockerfile", "start.sh", "runit/promptflow-serve/run", "settings.json", "flow/flow.dag.yaml",
            "flow/shout.py", "flow/reply.jinja2", "flow/.promptflow/flow.tools.json", "connections/aoai.yaml"} <= names
    assert "EXPOSE 8080" in (tmp_path / "context" / "Dockerfile").read_text(encoding="utf-8")
    run = (tmp_path / "context" / "runit" / "promptflow-serve" / "run").read_text(encoding="utf-8")
    assert "pf connection create --file /connections/aoai.yaml" in run and '0.0.0.0:8080' in run
    connection = YAML(typ="safe").load((tmp_path / "context" / "connections" / "aoai.yaml").read_text())
    assert connection["type"] == "azure_open_ai" and connection["name"] == "aoai"
    assert connection["api_key"] == "${env:AOAI_API_KEY}" and connection["api_base"] == "${env:AOAI_API_BASE}"
    settings = json.loads((tmp_path / "context" / "settings.json").read_text())
    assert settings == dict.fromkeys(["AOAI_API_BASE", "AOAI_API_KEY", "AOAI_API_TYPE", "AOAI_API_VERSION"], "")


def test_a_flow_without_connections_gets_none_and_an_openai_connection_reads_its_base_url_from_the_environment(
        make_spec, tmp_path):
    files = build_context(make_spec(flow="tiny_python"), tmp_path / "context")

    assert not any(path.parent.name == "connections" for path in files)
    assert "pf connection create" not in (tmp_path / "context" / "runit/promptflow-serve/run").read_text()
    assert connection_file("my-oai", "OpenAIConnection")["base_url"] == "${env:MY_OAI_API_BASE}"
    with pytest.raises(DeployError, match="CustomConnection"):
        connection_file("search", "CustomConnection")


def test_no_secret_is_written_and_promptflows_home_is_left_alone(make_spec, tmp_path):
    home = Path.home() / ".promptflow"
    before = sorted((str(p), p.stat().st_mtime_ns) for p in home.rglob("*")) if home.exists() else []
    DockerTarget(tmp_path / "docker", engine=False).deploy(make_spec())
    KubernetesTarget(tmp_path / "k8s").deploy(make_spec())

    planted = [tmp_path / ".env", tmp_path / "flows" / "tiny_llm" / ".env"]
    written = [path for path in tmp_path.rglob("*") if path.is_file() and path not in planted]
    assert len(written) > 20
    assert [path for path in written if SECRET.encode() in path.read_bytes() or b"planted" in path.read_bytes()] == []
    assert (sorted((str(p), p.stat().st_mtime_ns) for p in home.rglob("*")) if home.exists() else []) == before


def test_docker_build_is_skipped_when_no_engine_answers(make_spec, fake_docker, tmp_path):
    deployment = DockerTarget(tmp_path / "out").deploy(make_spec())

    assert deployment.detail == ("docker build skipped: no Docker engine (Cannot connect to the Docker daemon. "
                                 "Is the docker daemon running?)")
    assert [call["argv"] for call in calls(fake_docker)] == [["info"]]
    assert (tmp_path / "out" / "tiny_llm" / "blue" / "Dockerfile").is_file()


def test_docker_build_is_skipped_when_there_is_no_docker_command(make_spec, tmp_path, monkeypatch):
    spec = make_spec()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    deployment = DockerTarget(tmp_path / "out").deploy(spec)

    assert deployment.detail == "docker build skipped: no Docker engine (no docker command on PATH)"


def test_docker_builds_the_image_tagged_with_the_model_version_when_an_engine_answers(make_spec, fake_docker,
                                                                                      tmp_path):
    deployment = DockerTarget(tmp_path / "out", engine=True).deploy(make_spec(version="7"))

    context = tmp_path / "out" / "tiny_llm" / "blue"
    assert calls(fake_docker) == [{"argv": ["build", "-t", "tiny-llm:7", "."], "cwd": str(context)}]
    assert deployment.detail == f"built image tiny-llm:7 from {context}"
    assert str(context / "Dockerfile") in deployment.files


def test_a_failing_docker_build_raises_with_the_last_lines_of_its_output(make_spec, fake_docker, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "2")
    with pytest.raises(DeployError, match=r"docker build -t tiny-llm:3 .* failed \(exit 2\):\n") as error:
        DockerTarget(tmp_path / "out", engine=True).deploy(make_spec())

    assert "step 39" in str(error.value) and "step 10\n" not in str(error.value)


def test_docker_target_remembers_deployments_and_split_and_removes_one(make_spec, tmp_path):
    target = DockerTarget(tmp_path / "out", engine=False)
    target.deploy(make_spec("blue", version="1"))
    target.set_traffic("tiny_llm", {"blue": 100})
    target.deploy(make_spec("green", version="2"))

    again = DockerTarget(tmp_path / "out", engine=False)  # what a later release sees
    versions = {name: deployment.model["version"] for name, deployment in again.deployments("tiny_llm").items()}
    assert versions == {"blue": "1", "green": "2"}
    assert again.traffic("tiny_llm") == {"blue": 100, "green": 0}
    again.set_traffic("tiny_llm", {"green": 100})
    assert again.traffic("tiny_llm") == {"blue": 0, "green": 100}
    again.remove("tiny_llm", "blue")
    again.remove("tiny_llm", "blue")  # already gone: nothing
    assert list(again.deployments("tiny_llm")) == ["green"] and again.traffic("tiny_llm") == {"green": 100}
    assert not (tmp_path / "out" / "tiny_llm" / "blue").exists()
    assert again.deployments("other") == {} and again.traffic("other") == {}
    with pytest.raises(DeployError, match="builds images; it serves nothing here"):
        again.invoke("tiny_llm", "green", {"text": "hi"})


@pytest.mark.parametrize("split, message", [
    ({"blue": 70, "red": 30}, "names red, which endpoint 'tiny_llm' does not have"),
    ({"blue": 70, "green": 20}, "summing to 100"),
    ({"blue": 110, "green": -10}, "summing to 100"),
    ({"blue": 50.0, "green": 50}, "whole percentages"),
    ({"blue": True, "green": 99}, "whole percentages"),
])
def test_a_bad_split_is_refused_and_the_split_stays(make_spec, tmp_path, split, message):
    target = KubernetesTarget(tmp_path / "out")
    target.deploy(make_spec("blue"))
    target.deploy(make_spec("green"))
    target.set_traffic("tiny_llm", {"blue": 100})

    with pytest.raises(DeployError, match=message):
        target.set_traffic("tiny_llm", split)
    assert target.traffic("tiny_llm") == {"blue": 100, "green": 0}


def test_kubernetes_manifests_are_valid_objects_carrying_the_settings(make_spec, tmp_path):
    settings = {"cpu": "500m", "memory": "1Gi", "instance_count": 3, "service_type": "LoadBalancer",
                "environment_variables": {"LOG_LEVEL": "debug"}}
    target = KubernetesTarget(tmp_path / "out", image_registry="registry.example.com/team/")
    deployment = target.deploy(make_spec(**settings))

    docs = manifests(tmp_path / "out" / "tiny_llm")
    assert "&id" not in (tmp_path / "out" / "tiny_llm" / "manifests.yaml").read_text()  # plain YAML, no anchors
    assert [(doc["kind"], doc["metadata"]["name"]) for doc in docs] == [
        ("Deployment", "tiny-llm-blue"), ("Service", "tiny-llm-blue"), ("Service", "tiny-llm"),
        ("HTTPRoute", "tiny-llm")]
    for doc in docs[:3]:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    spec = docs[0]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert spec["replicas"] == 3 and spec["template"]["metadata"]["labels"] == {"app": "tiny-llm", "deployment": "blue"}
    assert container["image"] == "registry.example.com/team/tiny-llm:3"
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "500m", "memory": "1Gi"}}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8080}
    env = {item["name"]: item for item in container["env"]}
    assert env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert env["AOAI_API_KEY"] == {"name": "AOAI_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "tiny-llm-connections", "key": "AOAI_API_KEY"}}}
    assert env["AOAI_API_VERSION"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert docs[2]["spec"]["type"] == "LoadBalancer" and docs[2]["spec"]["selector"] == {"app": "tiny-llm"}
    assert "needs Secret tiny-llm-connections with AOAI_API_BASE, AOAI_API_KEY" in deployment.detail
    assert str(tmp_path / "out" / "tiny_llm" / "manifests.yaml") in deployment.files
    assert (tmp_path / "out" / "tiny_llm" / "blue" / "Dockerfile").is_file()


def test_kubernetes_route_weights_follow_the_split(make_spec, tmp_path):
    target = KubernetesTarget(tmp_path / "out")
    folder = tmp_path / "out" / "tiny_llm"
    target.deploy(make_spec("blue"))
    assert route_weights(folder) == {"tiny-llm-blue": 0}  # a new deployment takes no traffic
    target.set_traffic("tiny_llm", {"blue": 100})
    target.deploy(make_spec("green", version="4"))
    assert route_weights(folder) == {"tiny-llm-blue": 100, "tiny-llm-green": 0}

    target.set_traffic("tiny_llm", {"blue": 70, "green": 30})
    assert route_weights(folder) == {"tiny-llm-blue": 70, "tiny-llm-green": 30}
    route = manifests(folder)[-1]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "tiny-llm", "port": 80}]
    before = (folder / "manifests.yaml").read_text()
    target.set_traffic("tiny_llm", {"blue": 70, "green": 30})
    assert (folder / "manifests.yaml").read_text() == before  # deterministic

    target.remove("tiny_llm", "blue")
    assert [doc["metadata"]["name"] for doc in manifests(folder)] == ["tiny-llm-green"] * 2 + ["tiny-llm"] * 2
    target.remove("tiny_llm", "green")
    assert not (folder / "manifests.yaml").exists() and target.deployments("tiny_llm") == {}
    with pytest.raises(DeployError, match="writes manifests; it serves nothing here"):
        target.invoke("tiny_llm", "green", {})


def test_names_are_mapped_to_valid_dns_labels(make_spec, tmp_path):
    label = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
    long_a, long_b = "x" * 70 + "_a", "x" * 70 + "_b"
    assert dns_name("summarize_flex") == "summarize-flex" and dns_name("My Flow--v2_") == "my-flow-v2"
    assert dns_name("2nd") == "pf-2nd"
    assert dns_name(long_a) != dns_name(long_b) and all(len(dns_name(n)) <= 63 for n in (long_a, long_b))
    assert all(label.fullmatch(dns_name(n)) for n in ("summarize_flex", "2nd", long_a, "__"))

    KubernetesTarget(tmp_path / "out").deploy(make_spec("Blue_1"))
    docs = manifests(tmp_path / "out" / "tiny_llm")
    assert docs[0]["metadata"]["name"] == "tiny-llm-blue-1" and docs[0]["metadata"]["labels"]["deployment"] == "blue-1"
    for doc in docs[:3]:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("returns", ["str", "dict"])
def test_a_flex_flow_is_built_even_when_promptflow_cannot_infer_its_entry_signature(tmp_path, returns):
    """promptflow's build refuses an entry returning ``dict`` (serving does not need the signature): copied."""
    source = tmp_path / "flows" / "echo"
    source.mkdir(parents=True)
    (source / "flow.flex.yaml").write_text("entry: echo:echo\n", encoding="utf-8")
    (source / "echo.py").write_text(f"def echo(text: str) -> {returns}:\n    return {returns}(text=text)\n")
    target = load_target(source, tmp_path)
    folder, digest = package_flow(target, {}, {}, tmp_path / "package")
    spec = DeploymentSpec("echo", "blue", "echo", folder, {"name": "echo", "version": "1", "content_hash": digest},
                          {}, DeploymentSettings(base_image="example.org/python:3.11"), tmp_path, tmp_path / "out")
    build_context(spec, tmp_path / "context")

    for name in ("flow.flex.yaml", "echo.py"):
        assert (tmp_path / "context" / "flow" / name).read_text() == (source / name).read_text()
    assert (tmp_path / "context" / "Dockerfile").read_text().splitlines()[1] == "FROM example.org/python:3.11"


def test_a_broken_state_file_and_a_missing_docker_command_are_deploy_errors(make_spec, tmp_path, monkeypatch):
    spec = make_spec()
    (tmp_path / "out" / "tiny_llm").mkdir(parents=True)
    (tmp_path / "out" / "tiny_llm" / "endpoint.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DeployError, match=r"endpoint.json:1: not valid JSON .*delete the endpoint's folder"):
        DockerTarget(tmp_path / "out").traffic("tiny_llm")

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DeployError, match="docker build -t tiny-llm:3 .* could not start"):
        DockerTarget(tmp_path / "elsewhere", engine=True).deploy(spec)


def test_docker_context_holds_the_flows_additional_includes(make_spec, tmp_path):
    """The package has its additional_includes merged in, so promptflow's build (and the image) needs no
    original tree."""
    source = write_flow(tmp_path / "flows" / "with_include", "additional_includes:\n- ../../shared/shout.py\n"
                        + PYTHON_DAG)
    (source / "shout.py").unlink()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "shout.py").write_text(SHOUT_PY, encoding="utf-8")
    spec = make_spec(flow="with_include")
    shutil.rmtree(tmp_path / "shared")

    files = build_context(spec, tmp_path / "context")

    names = {path.relative_to(tmp_path / "context").as_posix() for path in files}
    assert {"flow/flow.dag.yaml", "flow/shout.py"} <= names
    assert "additional_includes" not in (tmp_path / "context" / "flow" / "flow.dag.yaml").read_text(encoding="utf-8")
