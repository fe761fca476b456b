"""A flow's own aggregation (a DAG's ``aggregation: true`` nodes, a flex class's ``__aggregate__``), run after its
lines as ``pf run`` runs it: for the flow under test (its metrics are the cell's) and for evaluation flows."""

from __future__ import annotations

import dataclasses
import inspect
import io
import math
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

from .workdir import working_directory

#: a DAG aggregation called in this thread: (input names, lines' inputs, lines' aggregation inputs) -> its numeric
#: metrics, or None when a node raised (the executor's own call then says what it logs)
DirectAggregation = Callable[[Sequence[str], Sequence[Mapping[str, Any]], Sequence[Any]], "dict[str, float] | None"]


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
        result = executor.exec_aggregation(*_dag_arguments(input_names, inputs, aggregation_inputs))
    return numbers(result.metrics or {})


def _dag_arguments(input_names: Sequence[str], inputs: Sequence[Mapping[str, Any]],
                   aggregation_inputs: Sequence[Any]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """A DAG aggregation's flow inputs and aggregation inputs, each a list over the lines."""
    return ({name: [line.get(name) for line in inputs] for name in input_names},
            {key: [line.get(key) for line in aggregation_inputs] for key in aggregation_inputs[0]})


def numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The logged metrics that are numbers, as floats."""
    return {key: float(value) for key, value in metrics.items() if is_number(value)}


def aggregation_input(line: Any) -> Any:
    """What a flow's aggregation takes from one of its lines (a promptflow LineResult): a DAG's aggregation
    inputs, a flex flow's output (the line's outputs are what its ``__aggregate__`` gets, as under pf run)."""
    if line.node_run_infos:  # a DAG's line ran nodes; a flex flow's ran its entry
        return dict(line.aggregation_inputs or {})
    output = line.output
    return {k: v for k, v in output.items() if k != "line_number"} if isinstance(output, Mapping) else output


def is_python_aggregation(definition: Mapping[str, Any]) -> bool:
    """Whether every aggregation node of a DAG is a Python tool (a flex ``__aggregate__`` is Python): only such an
    aggregation is re-run on resamples of its lines."""
    nodes = [node for node in definition.get("nodes") or [] if node.get("aggregation")]
    return all(node.get("type") == "python" for node in nodes)


def is_number(value: Any) -> bool:
    """A real number: not a bool, not NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


#: bootstrap resamples of a logged metric: cheap (a DAG aggregation call took about 3 ms here, so 0.7 s per
#: evaluated cell), and 5 replicates beyond a 97.5% percentile bound
RESAMPLES = 200
BUDGET = 10.0  # seconds all resamples of one aggregation may take, judged from its first call


@dataclass(frozen=True)
class Logged:
    """An aggregation's logged metrics and, per metric, its values on bootstrap resamples of the lines (their
    interval's source), or why it has none."""

    metrics: dict[str, float]
    replicates: dict[str, tuple[float, ...]] = field(default_factory=dict)
    no_interval: str = ""


def logged_metrics(executor: Any, input_names: Sequence[str], inputs: Sequence[Mapping[str, Any]],
                   aggregation_inputs: Sequence[Any], seed: str, pure_python: bool, site: str,
                   not_resampled: str = "",
                   needs_replicates: Callable[[Mapping[str, float]], Collection[str]] | None = None) -> Logged:
    """``aggregation_metrics``, re-run on RESAMPLES seeded resamples of the lines when the aggregation is pure
    Python, makes no LLM call and is quick enough (the resamples fit in BUDGET seconds); ``not_resampled`` says
    why the caller's lines must not be resampled (a row's repeats are not independent lines).
    ``needs_replicates``: of the logged metrics, those whose interval reads replicates (default: all); when
    none does, the aggregation is not re-run at all."""
    from .llm import ledger

    start = time.perf_counter()
    with ledger.scope(site) as calls:
        metrics = aggregation_metrics(executor, input_names, inputs, aggregation_inputs)
    took = time.perf_counter() - start
    if not metrics:
        return Logged(metrics)
    why = not_resampled or (
        "its aggregation is not a Python tool" if not pure_python
        else "its aggregation calls an LLM" if calls.llm_calls
        else f"its aggregation took {took:.2f} s, too long to re-run {RESAMPLES} times" if took * RESAMPLES > BUDGET
        else "one line has no spread to resample" if len(aggregation_inputs) < 2 else "")
    if why:
        return Logged(metrics, no_interval=why)
    wanted = set(metrics if needs_replicates is None else needs_replicates(metrics))
    names = [name for name in metrics if name in wanted]
    if not names:
        return Logged(metrics)
    return Logged(metrics, _replicates(executor, input_names, inputs, aggregation_inputs, seed, names))


def _replicates(executor: Any, input_names: Sequence[str], inputs: Sequence[Mapping[str, Any]],
                aggregation_inputs: Sequence[Any], seed: str, names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """Each metric's values on the resamples that ``stats.bootstrap_indices(seed)`` draws (a resample on which
    the aggregation logged nothing is left out)."""
    from .stats import bootstrap_indices

    values: dict[str, list[float]] = {name: [] for name in names}
    direct = in_this_thread(executor)
    with _quiet_metric_loggers(), working_directory(getattr(executor, "folder", None)):
        for picks in bootstrap_indices(len(aggregation_inputs), RESAMPLES, seed):
            lines, lines_in = [inputs[i] for i in picks], [aggregation_inputs[i] for i in picks]
            found = direct(input_names, lines, lines_in) if direct else None
            if found is None:
                found = aggregation_metrics(executor, input_names, lines, lines_in)
            for name in names:
                if name in found:
                    values[name].append(found[name])
    return {name: tuple(found) for name, found in values.items() if len(found) > 1}


@contextmanager
def _quiet_metric_loggers() -> Iterator[None]:
    """Resamples' ``log_metric`` calls reach no logger but the executor's own: promptflow's private
    MetricLoggerManager holds every registered one (a tracking client's, say)."""
    from promptflow._core.metric_logger import MetricLoggerManager

    manager = MetricLoggerManager.get_instance()
    registered = list(manager._metric_loggers)  # an executor's own logger, added while it aggregates, stays
    for logger in registered:
        manager.remove_metric_logger(logger)
    try:
        yield
    finally:
        for logger in registered:
            manager.add_metric_logger(logger)


def in_this_thread(executor: Any) -> DirectAggregation | None:
    """A DAG's Python aggregation nodes called one after another in this thread, as promptflow's executor calls
    them (the same inputs, defaults, types and node order), without the thread pool, run record and node log the
    executor makes per call (a resample is about 4x quicker). It reads promptflow's private executor internals
    (``_flow``, ``_tools_manager``, ``_multimedia_processor``, ``DAGManager``); None where they differ (a flex
    flow's ScriptExecutor, an async or cached node): the executor then runs each resample."""
    flow, tools = getattr(executor, "_flow", None), getattr(executor, "_tools_manager", None)
    if flow is None or tools is None or hasattr(executor, "_aggr_func"):
        return None
    nodes = [node for node in flow.nodes if node.aggregation]
    functions = {node.name: tools.get_tool(node.name) for node in nodes}
    if any(node.enable_cache or inspect.iscoroutinefunction(functions[node.name]) for node in nodes):
        return None

    def aggregate(input_names: Sequence[str], inputs: Sequence[Mapping[str, Any]],
                  aggregation_inputs: Sequence[Any]) -> dict[str, float] | None:
        from promptflow._core.metric_logger import add_metric_logger, remove_metric_logger

        metrics: dict[str, Any] = {}

        def log(key: str, value: Any) -> None:
            metrics[key] = value

        add_metric_logger(log)
        try:  # what a node prints went to promptflow's node log, never to the test's output: dropped
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                _run_nodes(executor, nodes, functions, *_dag_arguments(input_names, inputs, aggregation_inputs))
        except Exception:  # the executor's own call decides what a failing node leaves logged
            return None
        finally:
            remove_metric_logger(log)
        return numbers(metrics)

    return aggregate


def _run_nodes(executor: Any, nodes: Sequence[Any], functions: Mapping[str, Callable[..., Any]],
               inputs: dict[str, list[Any]], aggregation_inputs: dict[str, list[Any]]) -> None:
    """``FlowExecutor.exec_aggregation``'s preparation of the inputs, then its scheduler's order (bypass, run
    what is ready), each node's function called directly."""
    from promptflow.executor._dag_manager import DAGManager
    from promptflow.executor.flow_executor import FlowExecutor
    from promptflow.executor.flow_validator import FlowValidator

    flow, media = executor._flow, executor._multimedia_processor
    FlowValidator._validate_aggregation_inputs(inputs, aggregation_inputs)
    inputs = FlowExecutor._apply_default_value_for_aggregation_input(flow.inputs, inputs, aggregation_inputs)
    inputs = media.load_multimedia_data(flow.inputs, FlowValidator.resolve_aggregated_flow_inputs_type(flow, inputs))
    given = media.load_multimedia_data_recursively(aggregation_inputs)
    dag = DAGManager([dataclasses.replace(node, inputs={key: FlowExecutor._try_get_aggregation_input(value, given)
                                                        for key, value in node.inputs.items()})
                      for node in nodes], inputs)
    while not dag.completed():
        while dag.pop_bypassable_nodes():
            pass
        ready = dag.pop_ready_nodes()
        if not ready and not dag.completed():
            raise RuntimeError("no aggregation node is ready")
        for node in ready:
            function = functions[node.name]
            dag.complete_nodes({node.name: function(**dag.get_node_valid_inputs(node, function))})
