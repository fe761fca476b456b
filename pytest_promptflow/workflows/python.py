"""Which Python runs workflows: the configured one, the project's second environment, or this one.

promptflow and agent-framework cannot share an environment (opentelemetry pins), so a workflow
usually runs in a worker of a second environment; only when agent-framework is importable here does
the session's own interpreter serve.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ..errors import SpecError, Where

INI = "promptflow_workflow_python"
ENV_DIR = Path(".promptflow-envs") / "maf"  # where ``pytest-promptflow env maf`` creates it
FIX = f"fix: run `pytest-promptflow env maf` or set {INI}"


def env_python(env: Path) -> Path:
    """A virtual environment's interpreter."""
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_python(rootdir: Path, configured: str, flow: str, where: Where | None = None) -> str:
    """The interpreter for ``flow``'s worker; none found is one line naming the flow and the fix."""
    if configured.strip():
        path = Path(configured.strip()).expanduser()
        path = path if path.is_absolute() else rootdir / path
        if not path.is_file():
            raise SpecError(where, f"flow {flow}: {INI} = {configured.strip()} does not exist (looked for {path})",
                            f"fix: point {INI} at the python of an environment with agent-framework, or run "
                            "`pytest-promptflow env maf`")
        return str(path)
    default = env_python(rootdir / ENV_DIR)
    if default.is_file():
        return str(default)
    if importlib.util.find_spec("agent_framework") is not None:
        return sys.executable
    raise SpecError(where, f"flow {flow}: agent-framework is not installed beside this session and no second "
                    "environment was found", FIX)
