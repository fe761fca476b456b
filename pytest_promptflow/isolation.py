"""Keeps promptflow, azure-ai-evaluation and MLflow out of the user's home and off the network.

promptflow writes ``~/.promptflow/pf.yaml`` on import, and its telemetry log handler builds an Azure Monitor
exporter (even with telemetry off) whose settings worker calls settings.sdk.monitor.azure.com 5-15 s later;
azure-ai-evaluation imports both. So the environment is set before any of them can be imported: when pytest
loads the plugin (before conftests and test modules; the processes it starts inherit it), and before our own
code first imports promptflow in a process pytest did not start (a flow server, an MLflow model's predict).
Only environment variables and one small private folder: nothing is imported. A variable the user set wins
(``PF_HOME_DIRECTORY`` keeps their own promptflow home and its connections).
"""

from __future__ import annotations

import getpass
import os
import stat
import tempfile
from pathlib import Path
from typing import MutableMapping

HOME_VARIABLE = "PF_HOME_DIRECTORY"
SETTINGS_FILE = "pf.yaml"
TELEMETRY_OFF = "telemetry:\n  enabled: false\n"
#: read by the SDKs at import or when their exporters start; "true" turns each off
QUIET = {
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",  # the exporter's settings fetch (OneSettings)
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # the exporter's own usage metrics
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow's usage events (and their file under ~/.config)
}
PRIVATE = 0o700


def isolate(environ: MutableMapping[str, str] | None = None, home: Path | None = None) -> None:
    """Telemetry off and promptflow's home in ``home`` (default: this user's private temp home), unless set."""
    environ = os.environ if environ is None else environ
    for name, value in QUIET.items():
        environ.setdefault(name, value)
    environ.setdefault("PF_LOGGING_LEVEL", "WARNING")  # its INFO line per node would drown pytest's output
    if HOME_VARIABLE not in environ:
        environ[HOME_VARIABLE] = str(promptflow_home(home or private_home()))


def promptflow_home(folder: Path) -> Path:
    """``folder`` with a ``pf.yaml`` that turns promptflow's telemetry off (kept if it says otherwise)."""
    settings = folder / SETTINGS_FILE
    text = settings.read_text(encoding="utf-8") if settings.exists() else ""
    if "telemetry:" not in text:
        settings.write_text(text + TELEMETRY_OFF, encoding="utf-8")
    return folder


def private_home(tempdir: Path | None = None) -> Path:
    """``pytest-promptflow-home-<user>`` in the temp folder, this user's own with mode 0700; if that name is
    taken by anything else (another user's folder, a link, a file), a fresh private folder beside it."""
    tempdir = Path(tempdir or tempfile.gettempdir())
    folder = tempdir / f"pytest-promptflow-home-{_user()}"
    try:
        folder.mkdir(mode=PRIVATE)
    except FileExistsError:
        if not _ours(folder):
            return Path(tempfile.mkdtemp(prefix=f"{folder.name}-", dir=tempdir))
    os.chmod(folder, PRIVATE)  # mkdir's mode is masked by the umask
    return folder


def _user() -> str:
    """The uid where there is one (names may hold any character), else the login name."""
    return str(os.getuid()) if hasattr(os, "getuid") else getpass.getuser()


def _ours(folder: Path) -> bool:
    """A real folder (not a link) owned by this user."""
    info = folder.lstat()
    owner = info.st_uid == os.getuid() if hasattr(os, "getuid") else True
    return stat.S_ISDIR(info.st_mode) and owner
