"""Data, flows and evaluators come from inside the project root (pytest's rootdir) unless the user allows more.

A path such as ``data: ../outside/secret.jsonl`` would be read, copied into the reports and registered with a
release; so it is refused in one line naming where it was given. A symlink counts where it points.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SpecError, Where

ALLOW_OPTION = "--promptflow-allow-outside-root"
ALLOW_INI = "promptflow_allow_outside_root"


def check_inside(path: Path, root: Path | None, where: Where | None, what: str) -> None:
    """Raise the one line when ``path`` (a symlink: where it points) is outside ``root``; None allows anywhere."""
    if root is None or path.resolve().is_relative_to(root.resolve()):
        return
    raise SpecError(where, f"{what} {path} is outside the project root {root}",
                    f"move it inside, or pass {ALLOW_OPTION} (ini {ALLOW_INI} = true)")
