"""A flow's own aggregation (a DAG's ``aggregation: true`` nodes, a flex class's ``__aggregate__``), run after its
lines as ``pf run`` runs it: for the flow under test (its metrics are the cell's) and for evaluation flows."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def aggregation_metrics(executor: Any, input_names: Sequence[str], inputs: Sequence[Mapping[str, Any]],
                        aggregation_inputs: Sequence[Any]) -> dict[str, float]:
    """Run a flow's aggregation over its completed lines, as ``pf run`` does after the lines: the numbers its
    ``log_metric`` calls logged. Per completed line: its ``inputs`` and its ``aggregation_input`` (below);
    ``input_names`` are the flow's inputs."""
    if not getattr(executor, "has_aggregation_node", False) or not aggregation_inputs:
        return {}
    if hasattr(executor, "_aggr_func"):  # promptflow's private ScriptExecutor: a flex flow's __aggregate__
        from promptflow.contracts.types import AttrDict

        lines = [AttrDict(line) if isinstance(line, dict) else line for line in aggregation_inputs]
        result = executor.exec_aggregation(inputs={}, aggregation_inputs=lines)
    else:
        result = executor.exec_aggregation(
            inputs={name: [line.get(name) for line in inputs] for name in input_names},
            aggregation_inputs={key: [line.get(key) for line in aggregation_inputs] for key in aggregation_inputs[0]},
        )
    return {key: float(value) for key, value in (result.metrics or {}).items() if is_number(value)}


def aggregation_input(line: Any) -> Any:
    """What a flow's aggregation takes from one of its lines (a promptflow LineResult): a DAG's aggregation
    inputs, a flex flow's output (the line's outputs are what its ``__aggregate__`` gets, as under pf run)."""
    if line.node_run_infos:  # a DAG's line ran nodes; a flex flow's ran its entry
        return dict(line.aggregation_inputs or {})
    output = line.output
    return {k: v for k, v in output.items() if k != "line_number"} if isinstance(output, Mapping) else output


def is_number(value: Any) -> bool:
    """A real number: not a bool, not NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))
