"""The MLflow model of a registered flow: a pyfunc that runs the packaged flow folder, row by row.

MLflow keeps a copy of this file with every registered flow version ("models from code": nothing is
pickled) and runs it when the model is loaded, so it imports absolutely, never relatively, and needs
pytest-promptflow and promptflow wherever the model is loaded. The flow runs the way the suite runs
it (``FlowTarget.executor``). Connections are resolved at the first ``predict`` from the working
directory's ``.env`` and the environment, as in the suite, and else the embedded local model answers
(with a warning); no credential is ever stored in the model. promptflow's home and telemetry are set before
its first import, as in the suite (``flows.load_promptflow``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import mlflow.models
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from pytest_promptflow.flows import Runner, load_promptflow, load_target
from pytest_promptflow.llm.connections import resolve_connection
from pytest_promptflow.packaging import INIT_FILE, flow_file
from pytest_promptflow.registry.mlflow_registry import FLOW_ARTIFACT

logger = logging.getLogger("pytest_promptflow.registry")
_embedded: Any = None
_embedded_lock = threading.Lock()


class FlowRowError(Exception):
    """A row the flow could not answer (its error type and message, as a run records them)."""


class FlowModel(PythonModel):
    """Answers each input row (a DataFrame row, a dict, or a list of dicts) with the flow's outputs."""

    def load_context(self, context: Any) -> None:
        self.folder = Path(context.artifacts[FLOW_ARTIFACT])
        self._runner: Runner | None = None
        self._lock = threading.Lock()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """A DataFrame of outputs for a DataFrame, else a list of output dicts; a failing row raises."""
        runner = self.runner()
        answers = []
        for index, row in enumerate(_rows(model_input)):
            inputs = {key: value for key, value in row.items()
                      if not runner.input_names or key in runner.input_names}
            outcome = runner(inputs)
            if outcome.outputs is None:
                raise FlowRowError(f"row {index}: {outcome.error_type}: {outcome.error_message}")
            answers.append(dict(outcome.outputs))
        if isinstance(model_input, pd.DataFrame):
            return pd.DataFrame(answers, index=model_input.index)
        return answers

    def runner(self) -> Runner:
        with self._lock:
            if self._runner is None:
                self._runner = flow_runner(self.folder)
            return self._runner


def flow_runner(folder: Path) -> Runner:
    """What runs one row of the packaged flow in ``folder``, with its connections resolved now."""
    load_promptflow()
    target = load_target(flow_file(folder), folder)
    init = None
    if target.kind == "flex" and (folder / INIT_FILE).is_file():
        init = json.loads((folder / INIT_FILE).read_text(encoding="utf-8"))
    connections = {name: _connection(name, kind) for name, kind in target.connections(init).items()}
    return target.executor({}, {}, connections, init)


def _rows(model_input: Any) -> list[Mapping[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return list(model_input.to_dict(orient="records"))
    if isinstance(model_input, Mapping):
        return [model_input]
    return list(model_input)


def _connection(name: str, kind: str) -> Any:
    resolved = resolve_connection(name, kind, declared={}, project_dir=Path.cwd(), environ=os.environ,
                                  embedded=_embedded_address)
    if resolved.embedded:
        logger.warning("connection %r has no credentials in ./.env or the environment: %s answers", name,
                       resolved.source)
    return resolved.connection


def _embedded_address() -> str:
    """The embedded model of this process (started once; it exits when this process does)."""
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            from pytest_promptflow.llm.embedded import EmbeddedModel

            shared = Path(tempfile.gettempdir()) / f"pytest-promptflow-model-{os.getpid()}"
            _embedded = EmbeddedModel(shared, os.getpid())
        return str(_embedded.address())


mlflow.models.set_model(FlowModel())
