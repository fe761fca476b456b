"""Installed but unused, the plugin imports nothing heavy, starts nothing and opens no socket.

Checked in a fresh ``python -m pytest`` process (in-process runs would see this process's
imports), on a project that has nothing to do with promptflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("promptflow", "pandas", "azure", "xllamacpp", "mlflow")

RECORDER = '''\
"""Records what this pytest process imported, bound, listened on and started."""
import json
import os
import socket

import pytest

BOUND = []
_bind, _listen = socket.socket.bind, socket.socket.listen


def _record_bind(self, address):
    BOUND.append(("bind", repr(address)))
    return _bind(self, address)


def _record_listen(self, *args):
    BOUND.append(("listen", repr(self.getsockname())))
    return _listen(self, *args)


socket.socket.bind = _record_bind
socket.socket.listen = _record_listen


def _listening_inodes():
    """Socket inodes in LISTEN state (st 0A) from /proc/net/tcp and tcp6."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":
                inodes.add(fields[9])
    return inodes


def _own_socket_inodes():
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def _children():
    """Names of every process descending from this one (from /proc, no psutil import)."""
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        parents[int(pid)] = (ppid, name)
    mine, found = {os.getpid()}, []
    changed = True
    while changed:
        changed = False
        for pid, (ppid, name) in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                found.append(name)
                changed = True
    return found


def pytest_sessionfinish(session):
    with open(os.environ["INERT_REPORT"], "w") as out:
        json.dump({
            "modules": sorted(__import__("sys").modules),
            "bound": BOUND,
            "listening": sorted(_listening_inodes() & _own_socket_inodes()),
            "children": _children(),
        }, out)
'''


def test_unrelated_pytest_run_imports_starts_and_opens_nothing(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(RECORDER)
    (tmp_path / "test_unrelated.py").write_text(
        "def add(a, b):\n    return a + b\n\n\n"
        "def test_add():\n    assert add(2, 2) == 4\n\n\n"
        "def test_strings():\n    assert 'flow'.upper() == 'FLOW'\n"
    )
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PROMPTFLOW", "PF_"))}
    env["INERT_REPORT"] = str(report)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    found = json.loads(report.read_text())
    modules = found["modules"]
    assert "pytest_promptflow.plugin" in modules, "the plugin was not loaded: the check proves nothing"
    imported = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert imported == [], f"an unrelated run imported {imported}"
    assert found["bound"] == [], f"an unrelated run bound or listened on sockets: {found['bound']}"
    assert found["listening"] == [], "an unrelated run holds a listening socket"
    assert [name for name in found["children"] if "local_server" in name or "llama" in name] == []
    assert found["children"] == [], f"an unrelated run started processes: {found['children']}"


def test_plugin_import_alone_is_light() -> None:
    """Importing the plugin module (what every pytest run does) pulls in none of the heavy packages."""
    code = ("import sys, pytest_promptflow.plugin; "
            f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
