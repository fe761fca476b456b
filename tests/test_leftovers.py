"""Shared dirs of sessions killed with -9 are swept when the next session starts; live ones stay."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from pytest_promptflow.session import PromptflowSession

ROOT = Path(__file__).resolve().parents[1]

# a session that makes its shared dir (as the embedded model does), says where, and waits to be killed
KILLED_SESSION = """
import sys, time
from pathlib import Path
from pytest_promptflow.session import PromptflowSession
session = PromptflowSession(Path.cwd(), 1, None)
session.shared_dir.mkdir()
(session.shared_dir / "model.log").write_text("left behind")
print(session.shared_dir, flush=True)
time.sleep(60)
"""


def killed_session_dir() -> Path:
    """The shared dir of a real session process ended with kill -9, so it never closed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    process = subprocess.Popen([sys.executable, "-c", KILLED_SESSION], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        shared = Path(process.stdout.readline().strip())
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    return shared


def test_a_new_session_sweeps_the_dirs_of_killed_sessions_only(tmp_path: Path) -> None:
    temp = Path(tempfile.gettempdir())
    dead = killed_session_dir()
    live = temp / f"pytest-promptflow-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this process: alive
    other = temp / f"pytest-promptflow-home-{uuid.uuid4().hex[:8]}"  # not a session's name
    for folder in (live, other):
        folder.mkdir()
        (folder / "model.json").write_text("{}")
    try:
        assert dead.is_dir() and dead.name.startswith("pytest-promptflow-")
        session = PromptflowSession(tmp_path, 1, None)
        assert not dead.exists()
        assert (live / "model.json").is_file() and (other / "model.json").is_file()
        assert not session.shared_dir.exists()  # made only when used
    finally:
        for folder in (dead, live, other):
            shutil.rmtree(folder, ignore_errors=True)


def test_a_worker_session_sweeps_nothing(tmp_path: Path) -> None:
    """An xdist worker is given the controller's dir: only the owner sweeps, once per run."""
    dead = killed_session_dir()
    try:
        PromptflowSession(tmp_path, 1, None, shared_dir=tmp_path / "shared", owner_pid=os.getppid())
        assert dead.is_dir()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
