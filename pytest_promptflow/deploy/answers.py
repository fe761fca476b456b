"""A deployed endpoint's answers, standing in for a flow when the suite re-checks it.

The endpoint test sends the released cells' rows to the new deployment over its target (HTTP
locally, ``online_endpoints.invoke`` on Azure ML) and writes what came back to one JSON file. The
suite's own items then run again in a child pytest (``--promptflow-endpoint-answers FILE``) with
each answered flow replaced by those answers, so the same evaluators and the same thresholds judge
the endpoint, whichever front end (marker test or experiment.yaml) declared them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..flows import RowOutcome, Runner
from ..scrub import write_json


def answer_key(inputs: Mapping[str, Any]) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)


@dataclass(frozen=True)
class Answer:
    """One row sent to the endpoint: its inputs and the outputs, or the error, that came back."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any] | None
    error: str | None
    latency: float

    def as_json(self) -> dict[str, Any]:
        return {"inputs": dict(self.inputs), "outputs": self.outputs, "error": self.error, "latency": self.latency}


@dataclass(frozen=True)
class EndpointAnswers:
    """Answers by flow and dataset, and how many rows of each dataset were sent (0: all)."""

    rows: int
    flows: Mapping[str, Mapping[str, list[Answer]]] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        document = {"rows": self.rows, "flows": {flow: {dataset: [a.as_json() for a in answers]
                                                        for dataset, answers in datasets.items()}
                                                 for flow, datasets in self.flows.items()}}
        write_json(path, document, indent=1, default=str)

    @classmethod
    def read(cls, path: Path) -> EndpointAnswers:
        document = json.loads(path.read_text(encoding="utf-8"))
        return cls(int(document["rows"]), {flow: {dataset: [Answer(**a) for a in answers]
                                                  for dataset, answers in datasets.items()}
                                           for flow, datasets in document["flows"].items()})

    def target(self, flow: Any, dataset: str) -> AnsweredFlow | None:
        """What runs in place of ``flow`` on ``dataset``; None if the endpoint was not asked about it."""
        answers = self.flows.get(flow.name, {}).get(dataset)
        return None if answers is None else AnsweredFlow(flow, dataset, answers)


class AnsweredFlow:
    """Looks like the flow target to the engine; each row's outcome is the endpoint's answer to it."""

    def __init__(self, flow: Any, dataset: str, answers: list[Answer]) -> None:
        self.name = flow.name
        self.identity = ("endpoint", flow.identity, dataset)
        self._answers = {answer_key(a.inputs): a for a in answers}
        self._input_names = tuple(answers[0].inputs) if answers else ()

    def connection_uses(self, init: Mapping[str, Any] | None = None) -> dict[str, tuple[str, str]]:
        return {}  # the endpoint holds its own

    def executor(self, variants: Mapping[str, str], overrides: Mapping[str, Any], connections: Mapping[str, Any],
                 init: Mapping[str, Any] | None = None, executors: Any = None) -> Runner:
        """The endpoint's answers, one per row (no promptflow executor: ``executors`` is not needed)."""
        return Runner(self._answer, self._input_names)

    def _answer(self, inputs: Mapping[str, Any]) -> RowOutcome:
        answer = self._answers.get(answer_key(inputs))
        if answer is None:
            return RowOutcome(None, "EndpointNotAsked", "the endpoint test sent no row with these inputs")
        if answer.error is not None:
            return RowOutcome(None, "EndpointError", answer.error, answer.latency)
        return RowOutcome(answer.outputs, latency=answer.latency)
