"""No session, deployment or MLflow model of the plugin writes to the user's home or reaches anything but
127.0.0.1, whatever imports promptflow or azure-ai-evaluation first; promptflow's temp home is the user's own.

The whole runs are fresh ``python -m pytest`` processes with an empty HOME, their own temp folder and a
``sitecustomize`` that logs every connect and name lookup of them and of every Python process they start.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pytest_promptflow.deploy.local import LocalTarget
from pytest_promptflow.isolation import isolate, private_home

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"127.0.0.1", "::1", "localhost", "", None}
#: settings of the test process (some set by the plugin itself) that a user's fresh shell would not have
NOT_INHERITED = ("PYTEST_", "PF_", "PROMPTFLOW", "APPLICATIONINSIGHTS_", "MLFLOW_", "XDG_", "AOAI", "AZURE_",
                 "OPENAI", "DO_NOT_TRACK", "CI")
TIMEOUT = 300

RECORDER = '''\
"""Appends each connect and name lookup of this process to $CONNECT_LOG, one JSON line each."""
import json
import os
import socket

LOG = os.environ.get("CONNECT_LOG")


def _record(kind, address):
    host = address[0] if isinstance(address, tuple) else None  # a str is a Unix socket: local
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"pid": os.getpid(), "kind": kind, "host": host, "address": repr(address)}) + "\\n")


def _recording(method, kind):
    def wrapper(self, address, *args, **kwargs):
        _record(kind, address)
        return method(self, address, *args, **kwargs)
    return wrapper


if LOG:
    socket.socket.connect = _recording(socket.socket.connect, "connect")
    socket.socket.connect_ex = _recording(socket.socket.connect_ex, "connect")
    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        _record("lookup", (host, port))
        return _getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
'''

CONFTEST = '''\
import promptflow.client  # noqa: F401  (a user's conftest: promptflow before the plugin loads any flow)
'''

#: evals/test_qa.py's shape: the SDK imported at the top, one configuration, a gate that always opens
TEST_QA = '''\
import time

import pytest
from azure.ai.evaluation import F1ScoreEvaluator

IMPORTED = time.monotonic()
#: an Azure Monitor exporter asks its settings host 5 to 15 s after it is built (at the import above)
EXPORTER_DELAY = 16


@pytest.mark.promptflow(flow="flows/qa", data="evals/data/qa.jsonl", variants={"answer": "variant_0"})
def test_f1(flow_run):
    result = flow_run.evaluate(F1ScoreEvaluator(), mapping={"response": "${run.outputs.answer}",
                                                            "ground_truth": "${data.ground_truth}"})
    assert result.metrics["f1_score"] >= 0
    time.sleep(max(0.0, EXPORTER_DELAY - (time.monotonic() - IMPORTED)))  # a real suite runs for minutes
'''

#: a user's process loading the released model: what MLflow writes on its own import (its usage telemetry's
#: id under ~/.config, the loading process's own setting) is listed before the model loads
LOAD_MODEL = '''\
import json
import sys
import time
from pathlib import Path

import mlflow

STARTED = time.monotonic()


def home():
    return sorted(str(path.relative_to(Path.home())) for path in Path.home().rglob("*"))


before = home()
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/qa/1")
answers = model.predict([{"question": "What color is the bike?",
                          "context": "Anna rides a red bike to school every morning."}])
time.sleep(max(0.0, 16 - (time.monotonic() - STARTED)))  # as long as an exporter built at load would wait
print(json.dumps({"answers": answers, "home_before": before, "home_after": home()}))
'''


class Recorded:
    """A user's project with the repo's qa flow, an empty HOME and a temp folder of its own."""

    def __init__(self, root: Path) -> None:
        self.path = root / "project"
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.log = root / "connects.jsonl"
        self.recorder = root / "recorder"
        for folder in (self.home, self.tmp, self.recorder, self.path / "evals/data"):
            folder.mkdir(parents=True)
        (self.recorder / "sitecustomize.py").write_text(RECORDER, encoding="utf-8")
        shutil.copytree(ROOT / "flows/qa", self.path / "flows/qa")
        rows = (ROOT / "evals/data/qa.jsonl").read_text(encoding="utf-8").splitlines()[:2]
        (self.path / "evals/data/qa.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (self.path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
        (self.path / "evals/test_qa.py").write_text(TEST_QA, encoding="utf-8")
        (self.path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(NOT_INHERITED)}
        path = os.pathsep.join(p for p in (str(self.recorder), env.get("PYTHONPATH")) if p)
        return {**env, "HOME": str(self.home), "TMPDIR": str(self.tmp), "CONNECT_LOG": str(self.log),
                "PYTHONPATH": path}

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *command], cwd=self.path, env=self.environment(),
                              capture_output=True, text=True, timeout=TIMEOUT)

    def pytest(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "pytest", "evals", "-p", "no:cacheprovider", "-q", *args)

    def remote(self) -> list[dict[str, str]]:
        """Every recorded connect or lookup of a host that is not this machine's loopback."""
        return [entry for entry in self.entries() if entry["host"] not in LOOPBACK]

    def entries(self) -> list[dict[str, str]]:
        lines = self.log.read_text(encoding="utf-8").splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines]

    def home_contents(self) -> list[str]:
        return sorted(str(path.relative_to(self.home)) for path in self.home.rglob("*"))


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    project = Recorded(tmp_path)
    yield project
    target = LocalTarget(project.path / ".promptflow-deploy")
    for endpoint in target.endpoints():
        for name in list(target.deployments(endpoint)):
            target.remove(endpoint, name)


def test_a_suite_run_writes_no_home_and_reaches_only_loopback(recorded: Recorded) -> None:
    done = recorded.pytest()
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert any(entry["kind"] == "connect" for entry in recorded.entries()), "nothing recorded: the check proves nothing"
    assert recorded.remote() == []
    assert recorded.home_contents() == []
    assert (recorded.tmp / f"pytest-promptflow-home-{os.getuid()}/pf.yaml").is_file()  # promptflow's home


def test_a_local_release_and_its_mlflow_model_write_no_home_and_reach_only_loopback(recorded: Recorded) -> None:
    done = recorded.pytest("--promptflow-release", "--promptflow-report", "reports")
    assert done.returncode == 0 and "local endpoint qa, deployment blue: serving" in done.stdout, \
        done.stdout + done.stderr
    assert recorded.remote() == []
    assert recorded.home_contents() == []
    loaded = recorded.run("-c", LOAD_MODEL, f"sqlite:///{recorded.path / 'mlflow.db'}")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    model = json.loads(loaded.stdout.splitlines()[-1])
    assert [sorted(answer) for answer in model["answers"]] == [["answer"]]
    assert model["home_after"] == model["home_before"]
    pids = {entry["pid"] for entry in recorded.entries() if entry["kind"] == "connect"}
    assert len(pids) >= 4, "the suite, its endpoint test, the served flow and the model each connect, or the check " \
                           "proves nothing"
    assert recorded.remote() == []


def test_the_private_home_is_the_users_own_folder(tmp_path: Path) -> None:
    home = private_home(tmp_path)
    assert home.name == f"pytest-promptflow-home-{os.getuid()}"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    home.chmod(0o755)
    assert private_home(tmp_path) == home and stat.S_IMODE(home.stat().st_mode) == 0o700


def test_a_private_home_name_that_is_not_the_users_folder_is_not_used(tmp_path: Path) -> None:
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (tmp_path / f"pytest-promptflow-home-{os.getuid()}").symlink_to(planted)
    home = private_home(tmp_path)
    assert home.parent == tmp_path and home.name.startswith(f"pytest-promptflow-home-{os.getuid()}-")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700 and not home.is_symlink()


def test_settings_the_user_made_win(tmp_path: Path) -> None:
    environ = {"PF_HOME_DIRECTORY": "/their/home", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "false"}
    isolate(environ, tmp_path)
    assert environ["PF_HOME_DIRECTORY"] == "/their/home"
    assert environ["APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED"] == "false"
    assert environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert not (tmp_path / "pf.yaml").exists()
