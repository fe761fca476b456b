"""Flow targets: DAG (flow.dag.yaml with node_variants), flex (flow.flex.yaml), .prompty, callables, and
agent-framework workflows (``maf:module.py:factory``, run in a worker: see ``workflows``).

A target knows its variants and the connections its YAML names without importing promptflow
(collection stays cheap); the connections only a tool's signature types, and ``executor``, which
builds the thing that runs one row, import promptflow, when a flow runs. promptflow is an optional extra:
callables run without it; a promptflow flow without it is one line naming the extra (``require_promptflow``;
see ``extras``).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import json
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .aggregation import Logged, aggregation_input, is_python_aggregation, logged_metrics
from .errors import SpecError, Where
from .extras import MODULES, missing_module, require
from .flow_shape import check_dag, check_flex, check_prompty
from .includes import merged_folder, original_path, without_includes
from .isolation import isolate
from .promptflow_log import reroute
from .workdir import InFolder, working_directory
from .workflows.spec import DEFAULT_FACTORY, WorkflowSpec, is_workflow
from .workflows.spec import parse as parse_workflow

DAG_FILE = "flow.dag.yaml"
FLEX_FILE = "flow.flex.yaml"
INIT_FILE = "init.json"  # a class flow's init arguments beside its flow.flex.yaml (the GenAIOps template's)
PROVIDER_CONNECTION = {"AzureOpenAI": "AzureOpenAIConnection", "OpenAI": "OpenAIConnection"}
PROMPTFLOW_KINDS = ("dag", "flex", "prompty")  # the kinds promptflow runs; callables (and workflows) run without it


@dataclass(frozen=True)
class RowOutcome:
    """What one row of a flow gave: outputs, or an error (type and message)."""

    outputs: Mapping[str, Any] | None
    error_type: str | None = None
    error_message: str | None = None
    latency: float | None = None  # measured elsewhere (an endpoint's answer), else timed by the engine
    aggregation_input: Any = None  # what the flow's aggregation takes from this row: see aggregation_input


@dataclass(frozen=True, eq=False)
class FlowTarget:
    """A flow to run: a promptflow flow file or a Python callable."""

    name: str
    kind: str  # dag | flex | prompty | callable | maf (path: the workflow's module; definition: its factory)
    path: Path | None = None
    func: Callable[..., Any] | None = None
    definition: Mapping[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path | None:
        return None if self.path is None else self.path.parent

    def node_variants(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        """node -> (default variant id, all variant ids), from ``node_variants``."""
        found = {}
        for node, cfg in (self.definition.get("node_variants") or {}).items():
            ids = tuple((cfg.get("variants") or {}).keys())
            found[node] = (cfg.get("default_variant_id") or (ids[0] if ids else ""), ids)
        return found

    @property
    def identity(self) -> str:
        """What tells two targets apart: the flow file (a workflow's module and factory), or the callable object."""
        if self.func is not None:
            qualname = getattr(self.func, "__qualname__", self.name)
            return f"{getattr(self.func, '__module__', '')}.{qualname}@{id(self.func)}"
        return str(self.workflow) if self.kind == "maf" else str(self.path)

    @property
    def source(self) -> str:
        """What a release packages and a kept cell's fingerprint reads: the flow file, a workflow's
        ``maf:<module path>:<factory>``; "" for a callable."""
        return "" if self.kind == "callable" or self.path is None else self.identity

    @property
    def workflow(self) -> WorkflowSpec:
        """A ``maf`` target's module and factory."""
        assert self.kind == "maf" and self.path is not None
        return WorkflowSpec(self.path, str(self.definition.get("factory") or DEFAULT_FACTORY))

    def connections(self, init: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Connection name -> connection type, for every node (and variant) and init argument that names one."""
        return {name: kind for name, (kind, _) in self.connection_uses(init).items()}

    def connection_uses(self, init: Mapping[str, Any] | None = None) -> dict[str, tuple[str, str]]:
        """Connection name -> (connection type, the node or init argument that names it).

        Named by: an LLM node's ``connection``, a prompty's configuration, a node input whose tool
        parameter is typed as a connection (promptflow's tool metadata, read here), and init arguments:
        one flow.flex.yaml's ``init:`` types as a connection, ``connection`` / ``*_connection`` (promptflow
        passes the connection object in their place) and a model configuration's ``connection``.
        """
        from .llm.connections import model_config_connection

        found: dict[str, tuple[str, str]] = {}
        if self.kind == "maf":  # its clients read the SDK environment; its calls reach us through the proxy
            return found
        declared = {key: str((spec or {}).get("type", "")) for key, spec in (self.definition.get("init") or {}).items()
                    if isinstance(spec, Mapping)} if self.kind == "flex" else {}
        for key, value in (init or {}).items():
            if isinstance(value, str) and declared.get(key, "").endswith("Connection"):
                found[value] = (declared[key], f"init {key}")  # flow.flex.yaml types it: init: {key: {type: ...}}
            elif isinstance(value, str) and (key == "connection" or key.endswith("_connection")):
                found[value] = ("AzureOpenAIConnection", f"init {key}")
            elif named := model_config_connection(value):
                found[named[0]] = (named[1], f"init {key}")
        nodes = self._all_nodes()
        for node in nodes:
            name = node.get("connection")
            if isinstance(name, str):
                found[name] = (PROVIDER_CONNECTION.get(node.get("provider", ""), "AzureOpenAIConnection"),
                               str(node.get("name")))
        if self.kind == "dag" and self.folder is not None and any(n.get("type") != "llm" for n in nodes):
            from .node_connections import typed_connections

            self.require_promptflow()
            found.update(typed_connections(nodes, self.folder))
        if self.kind == "prompty":
            config = (self.definition.get("model") or {}).get("configuration") or {}
            kind = "OpenAIConnection" if config.get("type") == "openai" else "AzureOpenAIConnection"
            found[config.get("connection") or "aoai"] = (kind, "model.configuration")
        return found

    def require_promptflow(self) -> Any:
        """promptflow's executor, imported quietly; without promptflow (an optional extra), the one line naming
        this flow and the extra, so only this flow's items fail."""
        require("promptflow", f"flow {self.name}", self.path)
        return load_promptflow()

    def _all_nodes(self) -> list[Mapping[str, Any]]:
        """The DAG's nodes and every variant's node."""
        nodes = list(self.definition.get("nodes") or [])
        for name, cfg in (self.definition.get("node_variants") or {}).items():
            nodes += [{"name": name, **(v.get("node") or {})} for v in (cfg.get("variants") or {}).values()]
        return nodes

    def default_init(self) -> dict[str, Any]:
        """A class flow's ``init.json`` beside its flow.flex.yaml, read by default as the template does."""
        path = self.folder / INIT_FILE if self.kind == "flex" and self.folder is not None else None
        return read_init_json(path) if path is not None and path.is_file() else {}

    def check_overrides(self, overrides: Mapping[str, Any], where: Where | None) -> None:
        if self.kind == "maf":
            _check_factory_arguments(self.name, overrides, where)
            return
        nodes = {n.get("name"): n for n in self.definition.get("nodes") or []}
        for key in overrides:
            parts = key.split(".")
            if len(parts) < 3 or parts[0] != "nodes":
                raise SpecError(where, f"override {key!r} is not nodes.<node>.<field>...",
                                "write e.g. nodes.classify.inputs.temperature")
            if self.kind == "dag" and parts[1] not in nodes:
                raise SpecError(where, f"override {key!r} names unknown node {parts[1]!r}",
                                f"nodes in {self.path}: {', '.join(n for n in nodes if n)}")

    def executor(
        self,
        variants: Mapping[str, str],
        overrides: Mapping[str, Any],
        connections: Mapping[str, Any],
        init: Mapping[str, Any] | None = None,
        executors: Executors | None = None,
    ) -> Runner:
        """What runs one row with the chosen variants, overrides and connections; ``executors``: the session's,
        which makes each promptflow executor once."""
        if self.kind == "callable":
            return _callable_runner(self.func, with_connection_objects(init, connections))
        if self.kind == "maf":  # init and overrides are the factory's keyword arguments
            from .workflows.workers import current

            return current().runner(self.workflow, self.name, {**(init or {}), **overrides})
        executor = (executors.get(self, variants, overrides, connections, init) if executors is not None
                    else self.promptflow_executor(variants, overrides, connections, init))
        names = tuple(self.definition.get("inputs") or {}) if self.kind == "prompty" else executor_inputs(executor)
        aggregate = (functools.partial(logged_metrics, executor, names,
                                       pure_python=is_python_aggregation(self.definition))
                     if executor.has_aggregation_node else None)
        return Runner(lambda inputs: _outcome(executor.exec_line(dict(inputs))), names, aggregate)

    def promptflow_executor(
        self,
        variants: Mapping[str, str],
        overrides: Mapping[str, Any],
        connections: Mapping[str, Any],
        init: Mapping[str, Any] | None = None,
    ) -> Any:
        """promptflow's own executor for this flow: it runs lines and, for evaluation flows, the aggregation.

        It loads and runs in the flow's folder (merged with its ``additional_includes``), as under ``pf run``;
        a failure to load is the one line that names the file, the node and the fix.
        """
        from .flow_errors import load_error, missing_package

        assert self.path is not None
        self.require_promptflow()
        folder = merged_folder(self.path, self.definition, self.name) if self.kind != "prompty" else self.folder
        try:
            with working_directory(folder):
                executor = self._create_executor(folder, variants, overrides, connections, init)
        except SpecError:
            raise
        except (Exception, SystemExit) as exc:  # promptflow's load errors, whatever the user's code raised on import
            path, definition = self.path, self.definition
            error = missing_package(path.parent, self.name) or load_error(
                exc, path, self.name, folder, lambda file: original_path(file, folder or path.parent, path, definition))
            raise error from exc
        return InFolder(executor, folder)

    def _create_executor(self, folder: Path | None, variants: Mapping[str, str], overrides: Mapping[str, Any],
                         connections: Mapping[str, Any], init: Mapping[str, Any] | None) -> Any:
        FlowExecutor = load_promptflow()
        conns = {name: conn._to_execution_connection_dict() for name, conn in connections.items()}
        if self.kind == "dag":
            with tempfile.TemporaryDirectory(prefix="pytest-promptflow-") as temp:
                flow_file = Path(temp) / DAG_FILE
                _dump_yaml(resolve_dag(self.definition, variants, overrides), flow_file)
                return FlowExecutor.create(flow_file, conns, working_dir=folder, raise_ex=False)
        if self.kind == "flex":
            assert folder is not None and self.path is not None
            with _ENTRY_IMPORT_LOCK:
                _forget_foreign_entry_module(str(self.definition.get("entry", "")), folder)
                return FlowExecutor.create(folder / self.path.name, conns, working_dir=folder, raise_ex=False,
                                           init_kwargs=resolve_model_configs(init, connections))
        return FlowExecutor.create(_load_prompty(self.path, connections), conns,
                                   working_dir=folder, raise_ex=False)


class Executors:
    """A session's promptflow executors, one per flow and configuration: a configuration run on several
    datasets, or an evaluation flow scoring many cells, loads once (20 to 60 ms, and an SDK client for each
    LLM node). promptflow tracks each line apart, so any cell's rows may share one. Not a flex flow's: its
    executor holds an instance of the user's class, whose state (what its rows saw) is its cell's."""

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, target: FlowTarget, variants: Mapping[str, str], overrides: Mapping[str, Any],
            connections: Mapping[str, Any], init: Mapping[str, Any] | None = None) -> Any:
        """``target.promptflow_executor(...)``, made on first use. Connections are part of the configuration:
        resolved afresh per cell, they change when the embedded model had to start again."""
        if target.kind == "flex":
            return target.promptflow_executor(variants, overrides, connections, init)
        key = json.dumps([target.identity, variants, overrides, init,
                          {name: conn._to_execution_connection_dict() for name, conn in connections.items()}],
                         sort_keys=True, default=repr)
        with self._lock:
            if key not in self._made:
                self._made[key] = target.promptflow_executor(variants, overrides, connections, init)
            return self._made[key]


def executor_inputs(executor: Any) -> tuple[str, ...]:
    """A promptflow executor's flow inputs: declared ones, else a flex entry's signature."""
    declared = tuple(executor._flow.inputs)
    func = getattr(executor, "_func", None)
    if declared or func is None:
        return declared
    params = inspect.signature(func).parameters.values()
    return tuple(p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


@dataclass(frozen=True)
class Runner:
    """Runs one row; knows the flow's input names (declared, or read from the entry's signature)."""

    run: Callable[[Mapping[str, Any]], RowOutcome]
    input_names: tuple[str, ...]
    #: a flow's aggregation over its completed rows (their inputs, their aggregation inputs; ``seed``, ``site`` and
    #: ``not_resampled`` as keywords) -> aggregation.Logged: its metrics and their resampled values
    aggregate: Callable[..., Logged] | None = None
    #: with no input names: each row's columns are its inputs (a workflow whose start executor takes a dict)
    takes_row: bool = False

    def __call__(self, inputs: Mapping[str, Any]) -> RowOutcome:
        return self.run(inputs)


_ENTRY_IMPORT_LOCK = threading.Lock()


def _forget_foreign_entry_module(entry: str, folder: Path | None) -> None:
    """promptflow imports a flex entry ``module:func`` by module name, so a second flow whose module
    is also called ``flow`` would get the first one's; drop a cached module from another folder."""
    module_name = entry.split(":", 1)[0]
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if module is not None and (file is None or folder is None or Path(file).parent.resolve() != folder.resolve()):
        del sys.modules[module_name]


def promptflow_installed() -> bool:
    """Whether promptflow can be imported, without importing it."""
    return missing_module(MODULES["promptflow"]) is None


def load_promptflow() -> Any:
    """Import promptflow's executor once, quietly, out of the user's home and with telemetry off.

    Its import warns about marshmallow internals and writes an installation id into its home folder (see
    ``isolation``: set when the plugin loads, again here for a process that did not load the plugin).
    Without promptflow: ExtraMissing, the one line naming the ``promptflow`` extra.
    """
    isolate()
    require("promptflow", "running a promptflow flow")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import promptflow.connections  # noqa: F401
        from promptflow.executor import FlowExecutor
    reroute()  # its loggers write to the session's log file, not to stdout
    return FlowExecutor


def load_target(flow: str | Path | Callable[..., Any], base_dir: Path, where: Where | None = None) -> FlowTarget:
    """A FlowTarget from a path (folder, flow file, .prompty) or a callable."""
    check_flow(flow, where)
    if callable(flow) and not isinstance(flow, (str, Path)):
        name = getattr(flow, "__name__", type(flow).__name__)
        return FlowTarget(name=name, kind="callable", func=flow)
    if is_workflow(flow):
        workflow = parse_workflow(str(flow), base_dir, where)
        return FlowTarget(workflow.name, "maf", workflow.path, definition={"factory": workflow.factory})
    path = Path(flow)
    path = path if path.is_absolute() else base_dir / path
    if path.is_dir():
        for file_name, kind, check in ((DAG_FILE, "dag", check_dag), (FLEX_FILE, "flex", check_flex)):
            if (path / file_name).is_file():
                definition = _read_yaml(path / file_name)
                check(definition, path / file_name)
                return FlowTarget(path.name, kind, path / file_name, definition=definition)
        raise SpecError(where, f"{path} has no {DAG_FILE} or {FLEX_FILE}",
                        "point flow at a promptflow flow folder or a .prompty file")
    if path.is_file() and path.suffix == ".prompty":
        definition = _read_prompty_front_matter(path)
        check_prompty(definition, path)
        return FlowTarget(path.stem, "prompty", path, definition=definition)
    if path.is_file() and path.name in (DAG_FILE, FLEX_FILE):
        return load_target(path.parent, base_dir, where)
    raise SpecError(where, f"flow {str(flow)!r} not found (looked for {path})",
                    "give a flow folder (flow.dag.yaml / flow.flex.yaml), a .prompty file, or a callable")


def check_flow(flow: Any, where: Where | None) -> None:
    """A flow is a path (str or Path) or a callable; anything else is the one line that says so."""
    if isinstance(flow, (str, Path)) and str(flow).strip():
        return
    if callable(flow) and not isinstance(flow, (str, Path)):
        return
    raise SpecError(where, f"flow={flow!r} is not a flow",
                    "give a flow folder (flow.dag.yaml / flow.flex.yaml) or a .prompty file as a path, a workflow "
                    "as maf:<module.py>:<factory>, or a callable")


def _check_factory_arguments(flow: str, overrides: Mapping[str, Any], where: Where | None) -> None:
    """A workflow's overrides are its factory's keyword arguments: each a Python name."""
    for key in overrides:
        if not str(key).isidentifier():
            raise SpecError(where, f"override {key!r} of workflow {flow} is not a factory argument name",
                            "name the factory's keyword argument, e.g. overrides={\"temperature\": [0.0, 0.7]}")


def resolve_dag(definition: Mapping[str, Any], variants: Mapping[str, str], overrides: Mapping[str, Any]) -> dict:
    """The DAG with the chosen variant of every node that has variants, and overrides applied; without
    ``additional_includes``, since it runs (and is released) in the flow folder merged with them."""
    dag = copy.deepcopy(without_includes(definition))
    node_variants = dag.pop("node_variants", None) or {}
    nodes = []
    for node in dag.get("nodes") or []:
        if node.get("use_variants"):
            cfg = node_variants[node["name"]]
            variant = variants.get(node["name"]) or cfg.get("default_variant_id")
            node = {"name": node["name"], **copy.deepcopy(cfg["variants"][variant]["node"])}
        nodes.append(node)
    dag["nodes"] = nodes
    by_name = {n["name"]: n for n in nodes}
    for key, value in overrides.items():
        _, node_name, *path = key.split(".")
        target = by_name[node_name]
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return dag


def _outcome(line: Any) -> RowOutcome:
    status = str(getattr(line.run_info.status, "value", line.run_info.status))
    if status == "Completed":
        if not isinstance(line.output, Mapping):  # a prompty (or a flex function) answers with its text
            return RowOutcome({"output": line.output}, aggregation_input=line.output)
        outputs = {k: v for k, v in line.output.items() if k != "line_number"}
        return RowOutcome(outputs, aggregation_input=aggregation_input(line))
    error = line.run_info.error or {}
    debug = error.get("debugInfo") or {}
    inner = debug.get("innerException") or {}
    error_type = inner.get("type") or debug.get("type") or error.get("code") or "Error"
    message = inner.get("message") or error.get("message") or status
    return RowOutcome(None, error_type, message)


def with_connection_objects(init: Mapping[str, Any] | None, connections: Mapping[str, Any]) -> dict[str, Any]:
    """A class flow's init with connection names replaced by the resolved connection objects."""
    return {key: connections.get(value, value) if isinstance(value, str) else value
            for key, value in resolve_model_configs(init, connections).items()}


def resolve_model_configs(init: Mapping[str, Any] | None, connections: Mapping[str, Any]) -> dict[str, Any]:
    """Init with each model configuration that names a connection given that connection's endpoint and key
    instead, so that promptflow never looks the name up in its own connection store."""
    from .llm.connections import model_config_connection, resolve_model_config

    resolved = {}
    for key, value in (init or {}).items():
        named = model_config_connection(value)
        resolved[key] = resolve_model_config(value, connections[named[0]]) if named else value
    return resolved


def read_init_json(path: Path) -> dict[str, Any]:
    """A JSON object of init arguments; a bad file is one line naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SpecError(Where(path, exc.lineno), f"init arguments are not valid JSON ({exc.msg})",
                        "fix the JSON object") from None
    if not isinstance(value, dict):
        raise SpecError(Where(path, 1), "init arguments must be a JSON object",
                        'write e.g. {"model_config": {"connection": "aoai", "azure_deployment": "gpt-35-turbo"}}')
    return value


def _callable_runner(func: Any, init: Mapping[str, Any] | None) -> Runner:
    target: Any = func(**dict(init or {})) if inspect.isclass(func) else func
    call: Any = target if inspect.isfunction(target) or inspect.ismethod(target) else target.__call__
    is_async = inspect.iscoroutinefunction(call)
    names = tuple(p.name for p in inspect.signature(call).parameters.values()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def run(inputs: Mapping[str, Any]) -> RowOutcome:
        try:
            value = asyncio.run(target(**inputs)) if is_async else target(**inputs)
        except Exception as exc:  # a row that raises is an error row; the run goes on
            return RowOutcome(None, type(exc).__name__, str(exc))
        return RowOutcome(value if isinstance(value, Mapping) else {"output": value})

    return Runner(run, names)


def _read_yaml(path: Path) -> dict:
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(_read_text(path))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(Where(path, line), f"YAML syntax error: {getattr(exc, 'problem', exc)}",
                        "fix the YAML") from None
    if not isinstance(data, dict):
        raise SpecError(Where(path), "flow file is not a YAML mapping", "see promptflow's flow schema")
    return data


def _dump_yaml(data: Mapping[str, Any], path: Path) -> None:
    from ruamel.yaml import YAML

    with path.open("w", encoding="utf-8") as stream:
        YAML(typ="safe", pure=True).dump(dict(data), stream)


def _read_text(path: Path) -> str:
    """A flow file's text; one that is not UTF-8 is the one line naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(Where(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                        "save the file as UTF-8") from None


def _read_prompty_front_matter(path: Path) -> dict:
    text = _read_text(path)
    parts = text.split("---", 2)
    if len(parts) < 3:
        raise SpecError(Where(path, 1), "prompty file has no front matter between --- lines",
                        "see promptflow's prompty format")
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(parts[1]) or {}
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None  # parts[1] starts on the first --- line
        raise SpecError(Where(path, line), f"prompty front matter: YAML syntax error: {getattr(exc, 'problem', exc)}",
                        "fix the YAML between the --- lines") from exc
    if not isinstance(data, dict):
        raise SpecError(Where(path, 2), "prompty front matter is not a YAML mapping", "see promptflow's prompty format")
    return data


def _load_prompty(path: Path | None, connections: Mapping[str, Any]) -> Any:
    """Load a .prompty with its model configuration taken from our resolved connection."""
    from promptflow.core import Prompty

    assert path is not None
    definition = _read_prompty_front_matter(path)
    config = dict(((definition.get("model") or {}).get("configuration") or {}))
    conn = connections[config.get("connection") or "aoai"]
    config["connection"] = None  # Prompty.load merges into the file's configuration: clear it there
    if config.get("type") == "openai":
        config.update(api_key=conn.api_key, base_url=conn.base_url)
    else:
        config.update(type="azure_openai", api_key=conn.api_key, azure_endpoint=conn.api_base,
                      api_version=conn.api_version)
    return Prompty.load(source=path, model={"configuration": config})
