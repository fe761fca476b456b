"""``pytest-promptflow env maf``: the second environment that runs workflows beside a promptflow session.

agent-framework and promptflow cannot share an environment, so the workflows get a venv of their own
(by default ``<project>/.promptflow-envs/maf``, where the session looks first). Making it again is a
no-op when it already imports agent-framework.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..errors import SpecError
from .python import env_python

PACKAGES = ("agent-framework-core==1.23.*", "agent-framework-openai")


def ready(python: Path) -> bool:
    """Whether ``python`` runs and imports agent-framework's OpenAI chat-completions client."""
    if not python.is_file():
        return False
    check = "from agent_framework.openai import OpenAIChatCompletionClient"
    return subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0


def create(path: Path) -> tuple[Path, bool]:
    """The environment's python at ``path``, made and installed unless it is ready; (python, made now)."""
    python = env_python(path)
    if ready(python):
        return python, False
    _step([sys.executable, "-m", "venv", str(path)], f"creating the venv {path}")
    _step([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES],
          f"installing {' '.join(PACKAGES)} into {path}")
    return python, True


def _step(command: list[str], what: str) -> None:
    """Runs one step; a failure is one line with the tool's last words."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = next((line for line in reversed((done.stderr or done.stdout).splitlines()) if line.strip()), "")
        raise SpecError(None, f"{what} failed (exit {done.returncode}): {last.strip()}",
                        "fix what it says (network, disk, the Python version) and run it again")
