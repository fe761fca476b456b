"""The local target for real: promptflow serving processes and the router on 127.0.0.1.

One endpoint (``shop``, deployments ``blue`` and ``green`` of a one-node echo flow) is shared by the
module: a test that needs a deployment deploys it only if it is not running, and the module stops every
endpoint at its end, whatever failed.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from pytest_promptflow import cli
from pytest_promptflow.deploy.base import PIN_HEADER, DeployError, Deployment, DeploymentSettings, DeploymentSpec
from pytest_promptflow.deploy.local import LocalTarget
from pytest_promptflow.deploy.router import Endpoint, Router
from pytest_promptflow.deploy.serve import write_json

ECHO_FLOW = """\
inputs:
  text:
    type: string
outputs:
  answer:
    type: string
    reference: ${echo.output}
nodes:
- name: echo
  type: python
  source:
    type: code
    path: echo.py
  inputs:
    text: ${inputs.text}
"""

ECHO_PY = '''\
from promptflow.core import tool


@tool
def echo(text: str) -> str:
    with open("color.txt", encoding="utf-8") as stream:  # relative to the flow folder, as under pf flow serve
        return stream.read().strip() + ":" + text
'''

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def echo_flow(folder: Path, color: str, script: str = "echo.py") -> Path:
    """A flow answering ``{"answer": "<color>:<text>"}``; naming another ``script`` makes it unloadable."""
    folder.mkdir(parents=True)
    (folder / "flow.dag.yaml").write_text(ECHO_FLOW.replace("echo.py", script), encoding="utf-8")
    (folder / "echo.py").write_text(ECHO_PY, encoding="utf-8")
    (folder / "color.txt").write_text(color, encoding="utf-8")
    return folder


def spec(endpoint: str, deployment: str, folder: Path) -> DeploymentSpec:
    return DeploymentSpec(endpoint, deployment, "echo", folder, {"name": "echo", "version": folder.name}, {},
                          DeploymentSettings(), project_dir=folder.parent, output_dir=folder.parent)


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """(status, JSON answer, the deployment that answered) of one POST, error answers included."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                      **(headers or {})})
    try:
        with _direct.open(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers.get(PIN_HEADER, "")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get(PIN_HEADER, "")


def processes_mentioning(path: Path) -> list[psutil.Process]:
    """Running processes whose command line names something under ``path``."""
    return [p for p in psutil.process_iter(["cmdline"]) if any(str(path) in part for part in p.info["cmdline"] or [])]


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture(scope="module")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flows")
    for color in ("blue", "green"):
        echo_flow(folder / color, color)
    echo_flow(folder / "unloadable", "red", script="missing.py")
    return folder


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    target = LocalTarget(tmp_path_factory.mktemp("deploy"), start_timeout=60)
    yield target
    for endpoint in target.endpoints():
        target.stop(endpoint)
    assert processes_mentioning(target.state_dir) == []


def running(target: LocalTarget, flows: Path, name: str) -> Deployment:
    """Deployment ``name`` of endpoint ``shop``, serving flow ``name``; deployed if it is not running."""
    found = target.deployments("shop").get(name)
    return found if found is not None and found.url else target.deploy(spec("shop", name, flows / name))


@pytest.fixture
def blue(target: LocalTarget, flows: Path) -> Deployment:
    return running(target, flows, "blue")


@pytest.fixture
def green(target: LocalTarget, flows: Path, blue: Deployment) -> Deployment:
    return running(target, flows, "green")


def test_a_deployment_answers_through_the_router(target: LocalTarget, blue: Deployment) -> None:
    assert blue.model == {"name": "echo", "version": "blue"} and blue.detail.startswith("pid ")
    assert target.invoke("shop", "blue", {"text": "hi"}) == {"answer": "blue:hi"}
    target.set_traffic("shop", {"blue": 100})
    assert post(f"{target.router_url('shop')}/score", {"text": "ho"}) == (200, {"answer": "blue:ho"}, "blue")
    with pytest.raises(DeployError, match=r"^HTTP 400: .*Required input fields \['text'\] are missing"):
        target.invoke("shop", "blue", {"wrong": "input"})


def test_the_router_splits_traffic_as_set(target: LocalTarget, blue: Deployment, green: Deployment) -> None:
    target.set_traffic("shop", {"blue": 70, "green": 30})
    assert target.traffic("shop") == {"blue": 70, "green": 30}
    before = target.stats("shop")["deployments"]
    url, n = f"{target.router_url('shop')}/score", 350
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: post(url, {"text": str(i)}), range(n)))
    assert all(status == 200 and answer == {"answer": f"{by}:{i}"} for i, (status, answer, by) in enumerate(answers))
    after = target.stats("shop")
    counted = {name: {key: after["deployments"][name][key] - before.get(name, {}).get(key, 0)
                      for key in ("requests", "errors")} for name in ("blue", "green")}
    assert counted == {name: {"requests": sum(by == name for _, _, by in answers), "errors": 0}
                       for name in ("blue", "green")}
    assert abs(counted["blue"]["requests"] - 0.7 * n) <= 4 * math.sqrt(n * 0.7 * 0.3)
    assert after["traffic"] == {"blue": 70, "green": 30}
    assert all(d["latency_mean"] > 0 and d["latency_p95"] > 0 for d in after["deployments"].values())


def test_the_pin_header_overrides_the_split(target: LocalTarget, blue: Deployment, green: Deployment) -> None:
    target.set_traffic("shop", {"blue": 100})
    url = f"{target.router_url('shop')}/score"
    answers = [post(url, {"text": "x"}, {PIN_HEADER: "green"}) for _ in range(20)]
    assert all(answer == (200, {"answer": "green:x"}, "green") for answer in answers)
    status, answer, _ = post(url, {"text": "x"}, {PIN_HEADER: "purple"})
    assert status == 404 and answer == {"error": "no deployment 'purple'; deployments: blue, green"}


def test_a_bad_split_is_refused(target: LocalTarget, blue: Deployment, green: Deployment) -> None:
    target.set_traffic("shop", {"blue": 100})
    for split, message in (({"blue": 50, "purple": 50}, "has no deployment purple; it has: blue, green"),
                           ({"blue": 90}, "not whole percents 0..100 summing to 100"),
                           ({"blue": 101, "green": -1}, "not whole percents"),
                           ({"blue": 99.5, "green": 0.5}, "not whole percents")):
        with pytest.raises(DeployError, match=message):
            target.set_traffic("shop", split)
    assert target.traffic("shop") == {"blue": 100, "green": 0}


def test_removing_a_deployment_frees_its_process_and_port(target: LocalTarget, green: Deployment) -> None:
    record = json.loads((target.state_dir / "shop" / "endpoint.json").read_text())["deployments"]["green"]
    target.remove("shop", "green")
    assert not psutil.pid_exists(record["pid"]) and refuses(record["port"])
    assert "green" not in target.deployments("shop") and "green" not in target.traffic("shop")
    assert not (target.state_dir / "shop" / "green").exists()
    assert target.invoke("shop", "blue", {"text": "still"}) == {"answer": "blue:still"}
    target.remove("shop", "green")  # gone already: nothing to do


def test_a_flow_that_cannot_load_is_a_deploy_error_and_leaves_nothing(
        target: LocalTarget, flows: Path, blue: Deployment) -> None:
    with pytest.raises(DeployError) as raised:
        target.deploy(spec("shop", "red", flows / "unloadable"))
    message = str(raised.value)
    assert message.startswith("deployment 'red' of endpoint 'shop': the flow server exited with code 1: cannot serve")
    assert "Tool file 'missing.py' can not be found" in message and "\n" not in message
    assert message.endswith(f"(log: {target.state_dir / 'shop' / 'red.log'})")
    assert "red" not in target.deployments("shop") and not (target.state_dir / "shop" / "red").exists()
    assert processes_mentioning(target.state_dir / "shop" / "red") == []
    assert target.invoke("shop", "blue", {"text": "on"}) == {"answer": "blue:on"}


def test_a_deployment_not_ready_in_time_is_stopped(target: LocalTarget, flows: Path) -> None:
    impatient = LocalTarget(target.state_dir, start_timeout=0.5)
    with pytest.raises(DeployError, match=r"'slow': the flow server was not ready within 0.5 s: .* \(log: "):
        impatient.deploy(spec("slow", "blue", flows / "blue"))
    assert "slow" not in target.endpoints()
    assert processes_mentioning(target.state_dir / "slow") == []


def test_redeploying_replaces_the_process_and_the_cli_lists_and_stops(
        target: LocalTarget, flows: Path, blue: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    first = target.deploy(spec("solo", "blue", flows / "blue"))
    old = json.loads((target.state_dir / "solo" / "endpoint.json").read_text())
    second = target.deploy(spec("solo", "blue", flows / "green"))
    assert first.url != second.url and second.model["version"] == "green"
    assert not psutil.pid_exists(old["deployments"]["blue"]["pid"]) and refuses(old["deployments"]["blue"]["port"])
    assert target.invoke("solo", "blue", {"text": "x"}) == {"answer": "green:x"}

    assert cli.main(["deployments", "--dir", str(target.state_dir)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed if not line.startswith(" ")] == ["shop", "solo"]
    assert f"solo  {target.router_url('solo')}  traffic blue=0%" in listed
    assert any(line.split()[:5] == ["blue", "echo", "vgreen", "0%", "running"] for line in listed)
    assert "           1 requests, 0 errors, latency mean " in "\n".join(listed)  # solo's blue, invoked once

    crashed = psutil.Process(int(second.detail.split()[1]))  # detail: "pid N on 127.0.0.1:PORT"
    crashed.kill()
    crashed.wait(10)
    assert target.deployments("solo")["blue"].detail.startswith(f"not running (was pid {crashed.pid}; log ")
    assert cli.main(["stop", "solo", "--dir", str(target.state_dir)]) == 0
    assert capsys.readouterr().out == "stopped endpoint solo\n"
    assert "solo" not in target.endpoints() and not psutil.pid_exists(old["router"]["pid"])
    assert processes_mentioning(target.state_dir / "solo") == []
    assert cli.main(["stop", "solo", "blue", "--dir", str(target.state_dir)]) == 2
    assert capsys.readouterr().err == f"pytest-promptflow: error: no endpoint 'solo' in {target.state_dir}; " \
                                      "it has: shop\n"


class Backend(BaseHTTPRequestHandler):
    """A stand-in deployment that answers every POST with its own port."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"port": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_router_without_traffic_or_with_a_dead_deployment(tmp_path: Path) -> None:
    state = tmp_path / "endpoint.json"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    router = Router(Endpoint(state))
    for server in (backend, router):
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        port = backend.server_address[1]
        write_json(state, {"deployments": {"a": {"port": port}, "b": {"port": dead_port}}, "traffic": {"a": 0, "b": 0}})
        url = f"http://127.0.0.1:{router.server_address[1]}"
        assert post(f"{url}/score", {}) == (503, {"error": "no deployment has traffic; deployments: a, b"}, "")
        assert post(f"{url}/score", {}, {PIN_HEADER: "a"}) == (200, {"port": port}, "a")
        write_json(state, {"deployments": {"a": {"port": port}, "b": {"port": dead_port}}, "traffic": {"b": 100}})
        status, answer, by = post(f"{url}/score", {})
        assert (status, by) == (502, "b") and answer["error"].startswith("deployment 'b' did not answer")
        with _direct.open(f"{url}/stats", timeout=5) as response:
            stats = json.loads(response.read())
        assert stats["traffic"] == {"b": 100}
        assert {name: (d["requests"], d["errors"]) for name, d in stats["deployments"].items()} == \
            {"a": (1, 0), "b": (1, 1)}
    finally:
        for server in (backend, router):
            server.shutdown()
            server.server_close()


def get(url: str) -> tuple[int, Any]:
    """(status, JSON answer) of one GET, error answers included."""
    try:
        with _direct.open(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def kill(pid: int) -> None:
    """kill -9, and wait till the process is gone (reaped, or a zombie nobody here can reap)."""
    process = psutil.Process(pid)
    process.kill()
    try:
        process.wait(10)
    except psutil.TimeoutExpired:
        assert process.status() == psutil.STATUS_ZOMBIE


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_router_health_names_a_dead_deployment_and_its_share_goes_to_the_live_one(
        target: LocalTarget, blue: Deployment, green: Deployment) -> None:
    target.set_traffic("shop", {"blue": 50, "green": 50})
    url = target.router_url("shop")
    assert get(f"{url}/health") == (200, {"status": "Healthy", "down": [], "deployments": {
        "blue": {"traffic": 50, "status": "up"}, "green": {"traffic": 50, "status": "up"}}})
    dead = int(green.detail.split()[1])  # detail: "pid N on 127.0.0.1:PORT"
    kill(dead)

    assert get(f"{url}/health") == (503, {"status": "Degraded", "down": ["green"], "deployments": {
        "blue": {"traffic": 50, "status": "up"},
        "green": {"traffic": 50, "status": "down", "reason": f"process {dead} is gone"}}})
    answers = [post(f"{url}/score", {"text": str(i)}) for i in range(30)]
    assert answers == [(200, {"answer": f"blue:{i}"}, "blue") for i in range(30)]
    status, answer, by = post(f"{url}/score", {"text": "x"}, {PIN_HEADER: "green"})
    assert (status, by) == (502, "green") and answer["error"].startswith("deployment 'green' did not answer")
    assert target.deployments("shop")["green"].url == ""

    target.set_traffic("shop", {"green": 100})
    assert post(f"{url}/score", {"text": "x"}) == (503, {
        "error": "every deployment with traffic is down (green); deployments: blue, green"}, "")
    status, health = get(f"{url}/health")
    assert (status, health["status"], health["down"]) == (503, "Unhealthy", ["green"])
    target.set_traffic("shop", {"blue": 100})


#: A deploy in a process of its own, killed by the test while it starts the flow server.
DEPLOYER = """\
import sys
from pathlib import Path

from pytest_promptflow.deploy.base import DeploymentSettings, DeploymentSpec
from pytest_promptflow.deploy.local import LocalTarget

state, endpoint, flow = sys.argv[1:]
LocalTarget(Path(state)).deploy(DeploymentSpec(endpoint, "blue", "echo", Path(flow), {"name": "echo"}, {},
                                               DeploymentSettings(), Path(flow).parent, Path(flow).parent))
"""


def killed_deploy(target: LocalTarget, endpoint: str, flow: Path, recorded: bool) -> int:
    """Kills -9 a deploy of ``endpoint`` in another process once its flow server exists (``recorded``: once
    its pid is in the state file too) and returns that server's pid, left running by nobody."""
    deployer = subprocess.Popen([sys.executable, "-c", DEPLOYER, str(target.state_dir), endpoint, str(flow)])
    try:
        deadline = time.monotonic() + 60
        while (server := _starting_server(target, endpoint, recorded)) is None:
            assert deployer.poll() is None and time.monotonic() < deadline, "the deploy never started its server"
            time.sleep(0.02)
    finally:
        deployer.kill()
        deployer.wait(10)
    assert not gone(server)
    return server


def _starting_server(target: LocalTarget, endpoint: str, recorded: bool) -> int | None:
    """The pid of a flow server of ``endpoint`` that runs (and is in its state file as still starting, if
    ``recorded``)."""
    servers = [p.pid for p in processes_mentioning(target.state_dir / endpoint)
               if "pytest_promptflow.deploy.serve" in p.info["cmdline"]]
    if not servers or not recorded:
        return servers[0] if servers else None
    try:
        state = json.loads((target.state_dir / endpoint / "endpoint.json").read_text())
    except (OSError, ValueError):
        return None
    entry = state["deployments"].get("blue", {})
    return servers[0] if entry.get("pid") == servers[0] and entry.get("status") == "starting" else None


@pytest.mark.parametrize("recorded", [False, True], ids=["spawned", "recorded"])
def test_a_deploy_after_a_killed_one_ends_its_server_and_replaces_its_folder(
        target: LocalTarget, flows: Path, recorded: bool) -> None:
    endpoint = f"killed-{'recorded' if recorded else 'spawned'}"
    orphan = killed_deploy(target, endpoint, flows / "blue", recorded)
    left = "\n".join(target.problems(endpoint))
    assert "deployment blue: starting, or left by a deploy that was killed (pid " in left
    deployed = target.deploy(spec(endpoint, "blue", flows / "green"))
    assert gone(orphan) and deployed.url and str(orphan) not in deployed.detail
    assert target.invoke(endpoint, "blue", {"text": "again"}) == {"answer": "green:again"}
    target.set_traffic(endpoint, {"blue": 100})
    assert target.problems(endpoint) == []
    target.stop(endpoint)
    assert processes_mentioning(target.state_dir / endpoint) == []


def test_stop_ends_what_a_killed_deploy_left(target: LocalTarget, flows: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    orphan = killed_deploy(target, "halfway", flows / "blue", recorded=False)
    assert cli.main(["stop", "halfway", "--dir", str(target.state_dir)]) == 0
    assert capsys.readouterr().out == "stopped endpoint halfway\n"
    assert gone(orphan) and processes_mentioning(target.state_dir / "halfway") == []
    assert not (target.state_dir / "halfway").exists()


def test_a_recorded_pid_that_now_runs_another_server_is_never_signalled(
        target: LocalTarget, blue: Deployment) -> None:
    """A pid reused by another deployment's server (here: shop's blue) is not the leftover it was."""
    other = int(blue.detail.split()[1])
    entry = {"status": "starting", "pid": other, "port": None, "model": {"name": "echo"},
             "folder": str(target.state_dir / "ghost" / "blue" / "flow"),
             "log": str(target.state_dir / "ghost" / "blue.log")}
    (target.state_dir / "ghost").mkdir()
    write_json(target.state_dir / "ghost" / "endpoint.json",
               {"router": None, "traffic": {"blue": 0}, "deployments": {"blue": entry}})
    target.stop("ghost")
    assert not gone(other) and "ghost" not in target.endpoints()
    assert target.invoke("shop", "blue", {"text": "alive"}) == {"answer": "blue:alive"}


def test_a_deployment_behind_a_dead_router_does_not_answer_and_a_deploy_restarts_the_router(
        target: LocalTarget, flows: Path, blue: Deployment) -> None:
    router = json.loads((target.state_dir / "shop" / "endpoint.json").read_text())["router"]
    kill(router["pid"])
    found = target.deployments("shop")["blue"]
    assert found.url == "" and found.detail == f"{blue.detail}, but the endpoint's router is not running"
    running(target, flows, "blue")
    assert target.invoke("shop", "blue", {"text": "back"}) == {"answer": "blue:back"}


LEAKY_PY = '''\
import logging
import os

from promptflow.core import tool


@tool
def echo(text: str) -> str:
    logging.getLogger("leaky").warning("logged key %s for %s", os.environ["SHOP_API_KEY"], text)
    return text
'''


def test_a_deployments_log_holds_no_known_secret(target: LocalTarget, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A flow that logs its key: the deployment's log has *** where the key stood."""
    key = "planted-key-0123456789"
    monkeypatch.setenv("SHOP_API_KEY", key)  # the deployment inherits it, as a real one its credentials
    flow = echo_flow(tmp_path / "leaky", "unused")
    (flow / "echo.py").write_text(LEAKY_PY, encoding="utf-8")
    target.deploy(spec("leaky", "blue", flow))
    try:
        assert target.invoke("leaky", "blue", {"text": "hello"}) == {"answer": "hello"}
        text = "".join(log.read_text(encoding="utf-8") for log in (target.state_dir / "leaky").rglob("*.log"))
        assert "logged key *** for hello" in text, text[-2000:]
        assert key not in text
    finally:
        target.stop("leaky")
