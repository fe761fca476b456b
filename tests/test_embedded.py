"""The embedded model server: one per session, shared, stopped, and never outliving its owner."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from pytest_promptflow.llm.embedded import EmbeddedModel

ROOT = Path(__file__).resolve().parents[1]
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> dict:
    with direct.open(url, timeout=10) as response:
        return json.load(response)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with direct.open(request, timeout=60) as response:
        return json.load(response)


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.1)
    return False


def port_closed(address: str, pid: int) -> bool:
    """Nothing listens there any more, or (on a busy machine) someone else got the port since."""
    parts = urlsplit(address)
    with socket.socket() as sock:
        if sock.connect_ex((parts.hostname, parts.port)) != 0:
            return True
    listeners = {c.pid for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == parts.port}
    return pid not in listeners


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    model = EmbeddedModel(tmp_path_factory.mktemp("shared"), owner_pid=os.getpid())
    yield model
    model.stop()


def test_nothing_starts_until_asked(tmp_path: Path) -> None:
    model = EmbeddedModel(tmp_path / "shared", owner_pid=os.getpid())
    assert not model.started
    model.stop()  # safe when nothing was started
    assert not (tmp_path / "shared").exists()


def test_import_is_light() -> None:
    code = ("import sys, pytest_promptflow.llm.embedded; "
            "print([m for m in ('promptflow', 'xllamacpp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_chat_completion_on_both_paths(model: EmbeddedModel) -> None:
    address = model.address()
    assert model.started
    body = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2}
    for path in ("/v1/chat/completions", "/openai/deployments/gpt-4o/chat/completions?api-version=2024-02-01"):
        reply = post(address + path, body)
        assert isinstance(reply["choices"][0]["message"]["content"], str)


def test_bad_request_is_answered_and_the_server_survives(model: EmbeddedModel) -> None:
    address = model.address()
    with pytest.raises(urllib.error.HTTPError) as info:
        post(address + "/v1/chat/completions", {"messages": "not a list"})
    assert 400 <= info.value.code < 600
    assert "message" in json.load(info.value)["error"]
    assert get(address + "/health") == {"status": "ok"}


def test_second_instance_reuses_the_server(model: EmbeddedModel) -> None:
    address = model.address()
    record = json.loads(model.record_path.read_text())
    before = get(address + "/stats").get("chat", 0)
    other = EmbeddedModel(model.shared_dir, owner_pid=os.getpid())
    assert other.started
    assert other.address() == address
    assert json.loads(model.record_path.read_text()) == record
    post(address + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
    assert get(address + "/stats")["chat"] == before + 1


def test_concurrent_callers_get_one_server_and_stop_ends_it(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    models = [EmbeddedModel(shared, owner_pid=os.getpid(), parallel=1) for _ in range(2)]
    script = ("import os, sys; from pytest_promptflow.llm.embedded import EmbeddedModel; "
              "print(EmbeddedModel(sys.argv[1], int(sys.argv[2]), parallel=1).address())")
    workers = [subprocess.Popen([sys.executable, "-c", script, str(shared), str(os.getpid())],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    addresses: list[str] = []
    threads = [threading.Thread(target=lambda m=m: addresses.append(m.address())) for m in models * 2]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        addresses += [w.communicate(timeout=90)[0].strip() for w in workers]
        assert len(addresses) == 6 and len(set(addresses)) == 1
        assert sum(m._process is not None for m in models) <= 1
        address, pid = addresses[0], json.loads(models[0].record_path.read_text())["pid"]
    finally:
        EmbeddedModel(shared, owner_pid=os.getpid()).stop()  # any instance can stop it
    assert gone(pid, within=2)
    assert port_closed(address, pid)
    assert not models[0].record_path.exists()
    assert not models[0].started and not models[1].started
    models[1].stop()  # again, and from an instance that did not start it: nothing to do


def test_server_exits_when_its_owner_dies(tmp_path: Path) -> None:
    # The owner lives until its stdin closes, so it surely outlives the server's start.
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    model = EmbeddedModel(tmp_path, owner_pid=owner.pid, parallel=1)
    try:
        address = model.address()
        pid = json.loads(model.record_path.read_text())["pid"]
        assert get(address + "/health") == {"status": "ok"}
        assert owner.stdin is not None
        owner.stdin.close()
        # Wait for it to exit but leave it unreaped: a zombie owner must count as dead too.
        os.waitid(os.P_PID, owner.pid, os.WEXITED | os.WNOWAIT)
        assert gone(pid, within=5), "the server outlived its owner"
        assert port_closed(address, pid)
        assert not model.started
    finally:
        owner.kill()
        model.stop()


def test_start_failure_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_promptflow.llm.embedded.SERVER_MODULE", "pytest_promptflow.no_such_module")
    with pytest.raises(RuntimeError, match="(?s)exited with code 1.*No module named"):
        EmbeddedModel(tmp_path, owner_pid=os.getpid()).address()
    assert not (tmp_path / "model.json").exists()
