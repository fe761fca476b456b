"""The lines under "collected N items": cells, and where each connection's model comes from."""

from __future__ import annotations

import os
from typing import Any

EMBEDDED = "embedded model SmolLM2-135M-Instruct (llama.cpp on 127.0.0.1, started on first use; no credentials found)"
REPLAYED = "answers the embedded model SmolLM2-135M-Instruct gave when recorded (replay: no model is started)"


def collection_lines(session: Any, items: list[Any]) -> list[str]:
    planned = [p for p in (planned_cell(item) for item in items) if p is not None]
    if not planned:
        return []
    from ..flows import PROMPTFLOW_KINDS, load_promptflow, promptflow_installed
    from ..llm.connections import resolve_connection

    installed = promptflow_installed()  # an optional extra: without it, its flows' items say so, one line each
    if installed:
        load_promptflow()
    from ..llm.settings import MODES

    cells = {(p.cell.flow, p.id) for p in planned}  # several tests of one cell are one cell
    rows = getattr(session.engine.backend, "description", "") or f"{session.engine.concurrency} rows at a time per cell"
    lines = [f"promptflow: {len(cells)} cells, {rows}{repeat_text(planned)}",
             f"promptflow: LLM calls: {session.llm.mode} mode ({MODES[session.llm.mode]}), "
             f"store {session.llm.store}"]
    embedded = REPLAYED if session.llm.mode == "replay" else EMBEDDED
    seen: dict[str, str] = {}
    for cell in planned:
        if not installed and cell.target.kind in PROMPTFLOW_KINDS:
            continue
        declared = {c.name: c for c in cell.spec.connections}
        try:
            uses = cell.target.connections(cell.init)
        except Exception:  # noqa: BLE001 - a flow that cannot be read: its items say why, in one line each
            continue
        for name, kind in uses.items():
            if name not in seen:
                try:
                    resolved = resolve_connection(name, kind, declared=declared, project_dir=session.rootdir,
                                                  environ=os.environ, embedded=lambda: "http://127.0.0.1")
                except Exception as error:  # noqa: BLE001 - its flow's items say it, in one line each
                    seen[name] = f"not resolved: {getattr(error, 'problem', None) or type(error).__name__}"
                    continue
                seen[name] = embedded if resolved.embedded else f"credentials from {resolved.source}"
    lines += [f"promptflow: connection {name} -> {text}" for name, text in sorted(seen.items())]
    return lines + sdk_environment_lines(session)


def repeat_text(planned: list[Any]) -> str:
    """``, repeat 3 (each row runs 3 times)`` when rows repeat (``repeat 1/3`` when cells differ); else nothing."""
    counts = sorted({cell.repeats for cell in planned})
    if counts == [1]:
        return ""
    shown = "/".join(str(k) for k in counts)
    return f", repeat {shown} (each row runs {shown} times)"


def sdk_environment_lines(session: Any) -> list[str]:
    """One line when SDK clients built from the environment will reach the embedded model."""
    from ..llm.sdk_environment import describe, unconfigured

    families = unconfigured(os.environ, session.dotenv_names())
    if not families:
        return []
    model = "stored answers of the embedded model (replay)" if session.llm.mode == "replay" else "embedded model"
    counted = ", ".join(family.connection for family in families)
    return [f"promptflow: {describe(families)} unset -> {model} for SDK clients built from them "
            f"(connections {counted})"]


def planned_cell(item: Any) -> Any:
    """The item's planned cell, if it is a promptflow item that could be planned."""
    from ..session import PlannedCell

    planned = getattr(item, "planned", None)
    if planned is None and getattr(item, "callspec", None) is not None:
        planned = item.callspec.params.get("flow_run")
    return planned if isinstance(planned, PlannedCell) else None
