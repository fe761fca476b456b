"""One embedded model per machine (issue 16, item 3): sessions and deployments share it under leases, the last
to leave stops it, a dead user's lease keeps nothing alive, and ``pytest-promptflow stop --all`` ends it.
Real processes: each user is a subprocess; the runtime folder is the test's own."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from test_deploy_build import LLM_DAG, SHOUT_PY
from test_deploy_local import processes_mentioning
from test_embedded import get, gone

from pytest_promptflow import cli
from pytest_promptflow.deploy.base import DeploymentSettings, DeploymentSpec
from pytest_promptflow.deploy.local import LocalTarget
from pytest_promptflow.llm.embedded import RUNTIME_VARIABLE, EmbeddedModel, runtime_dir, servers_of

ROOT = Path(__file__).resolve().parents[1]
#: A pytest session's way to the model: it prints the address and server pid, then holds its lease until a line
#: arrives on stdin and closes as a session does.
SESSION = """
import json, sys
from pathlib import Path
from pytest_promptflow.session import PromptflowSession

session = PromptflowSession(Path(sys.argv[1]), 1, None)
address = session.embedded_address()
record = json.loads(session.embedded.record_path.read_text())
print(json.dumps({"address": address, "pid": record["pid"]}), flush=True)
sys.stdin.readline()
session.close()
"""


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A runtime folder of the test's own, for this process and the users it starts."""
    folder = tmp_path / "runtime"
    monkeypatch.setenv(RUNTIME_VARIABLE, str(folder))
    yield folder
    EmbeddedModel(folder).stop()


class User:
    """A session in a subprocess, holding the shared model until it leaves."""

    def __init__(self, project: Path) -> None:
        project.mkdir(exist_ok=True)
        self.process = subprocess.Popen([sys.executable, "-c", SESSION, str(project)], cwd=ROOT, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        self.seen = json.loads(self.process.stdout.readline())

    def leave(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.wait(timeout=30) == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def test_two_sessions_share_one_server_until_the_last_leaves(runtime: Path, tmp_path: Path) -> None:
    first = User(tmp_path / "a")
    second = User(tmp_path / "b")
    assert second.seen == first.seen  # same port, same process
    server = first.seen["pid"]
    first.leave()
    assert not gone(server, within=2), "the server stopped while a session still held it"
    assert get(second.seen["address"] + "/health") == {"status": "ok"}
    second.leave()
    assert gone(server, within=5)
    assert not psutil.pid_exists(server) or psutil.Process(server).status() == psutil.STATUS_ZOMBIE
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700


def test_a_killed_sessions_lease_keeps_nothing_alive(runtime: Path, tmp_path: Path) -> None:
    killed, living = User(tmp_path / "a"), User(tmp_path / "b")
    server = killed.seen["pid"]
    killed.kill()  # no close: its lease stays behind, naming a dead pid
    assert not gone(server, within=2)
    living.leave()  # the last live user: the dead one's lease does not keep the server
    assert gone(server, within=5)
    alone = User(tmp_path / "c")
    alone.kill()  # nobody releases: the server sees no live lease and exits by itself
    assert gone(alone.seen["pid"], within=5)
    assert list((runtime / "leases").iterdir()) == []


def test_a_killed_server_is_started_again_by_the_next_user(runtime: Path) -> None:
    model = EmbeddedModel()
    first = model.address()
    server = json.loads(model.record_path.read_text())["pid"]
    os.kill(server, signal.SIGKILL)
    assert gone(server, within=5)
    again = model.address()
    assert get(again + "/health") == {"status": "ok"}
    assert json.loads(model.record_path.read_text())["pid"] != server
    model.release()
    assert not model.started and first


def test_stop_all_leaves_no_server(runtime: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = User(tmp_path / "a")
    try:
        assert cli.main(["stop", "--all", "--dir", str(tmp_path / "deploy")]) == 0
        assert gone(holder.seen["pid"], within=5)
        assert list(servers_of(runtime)) == []
        assert "stopped the embedded model" in capsys.readouterr().out
    finally:
        holder.kill()


def test_a_local_deployment_shares_the_sessions_model_and_stop_all_ends_both(
        runtime: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = tmp_path / "flows" / "reply"
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(LLM_DAG)
    (flow / "reply.jinja2").write_text("# user:\nSay {{text}}\n")
    (flow / "shout.py").write_text(SHOUT_PY)
    holder = User(tmp_path / "a")
    target = LocalTarget(tmp_path / "deploy", start_timeout=120)
    try:
        deployment = target.deploy(DeploymentSpec("desk", "blue", "reply", flow, {"name": "reply", "version": "1"},
                                                  {}, DeploymentSettings(), project_dir=tmp_path,
                                                  output_dir=tmp_path))
        assert isinstance(target.invoke("desk", "blue", {"text": "hi"})["answer"], str)  # through the model
        served = int(deployment.detail.split()[1])  # detail: "pid N on 127.0.0.1:PORT"
        assert {p.name for p in (runtime / "leases").iterdir()} == {str(holder.process.pid), str(served)}
        assert json.loads((runtime / "model.json").read_text())["pid"] == holder.seen["pid"]  # one server
        assert cli.main(["stop", "--all", "--dir", str(target.state_dir)]) == 0
        assert capsys.readouterr().out.splitlines() == [
            "stopped endpoint desk", f"stopped the embedded model ({runtime})"]
        assert gone(holder.seen["pid"], within=5) and list(servers_of(runtime)) == []
        assert target.endpoints() == [] and processes_mentioning(target.state_dir) == []
    finally:
        holder.kill()
        for endpoint in target.endpoints():
            target.stop(endpoint)


def test_stop_takes_an_endpoint_or_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stop", "--dir", str(tmp_path)]) == 2
    assert "or --all alone" in capsys.readouterr().err


def test_the_runtime_folder_is_not_the_home_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUNTIME_VARIABLE, raising=False)
    assert Path.home() not in runtime_dir().parents
