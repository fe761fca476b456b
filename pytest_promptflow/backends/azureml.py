"""Azure ML runs (``--promptflow-backend azureml``): a cell goes up as one promptflow batch run on an Azure ML
workspace through promptflow-azure's ``PFClient``, submitted as the GenAIOps template's cloud mode submits it (a
``promptflow.entities.Run`` to ``pf.runs.create_or_update``); the backend waits (``pf.stream``) and reads the lines
back (``pf.get_details``) into the engine's rows, in dataset order, so the same evaluators, report and verdicts
follow. promptflow-azure (the ``azureml`` extra) is imported only when a cell runs.

What goes up: the flow (folder, or .prompty file), a jsonl of the cell's rows (one line per row and repeat, its
dataset columns), the dataset's mappings as the column mapping, the cell's one non-default node variant as
``variant``, ``nodes.<node>.connection`` / ``nodes.<node>.inputs.deployment_name`` overrides as the run's
``connections``, a flex class's init, and the compute: ``resources={"compute": NAME}`` or, serverless,
``resources={"instance_type": TYPE}`` (none: Azure chooses). Connections are resolved by name in the workspace.

What cannot, each one line on that cell's items: a callable or ``maf:`` workflow (only promptflow flows run
there), two non-default variants (a run takes one), any other override, and a DAG with aggregation nodes (their
metrics are logged in the cloud and not read back here).

What is not known here: the rows' LLM calls ran in the cloud, so their calls, tokens, cost and latency are not
counted, and no answer reaches the LLM store (``engine.Row.elsewhere``; the report says so instead of zeros).
``get_details`` carries no line's error: a line without outputs is an error row that names the run to look at.
A run that fails, is cancelled or cannot be submitted makes every row of the cell an error row with its one line.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pytest

from ..engine import CellWork, Row, RowObserver, RowWork, run_row
from ..errors import SpecError
from ..extras import MODULES, ExtraMissing, install_command, require
from ..flows import PROMPTFLOW_KINDS, FlowTarget, RowOutcome

SERVERLESS = "serverless"
THREADS_FIX = "run it with --promptflow-backend threads"
#: the overrides a cloud run can carry, as its ``connections`` entry of the node: override field -> run key
CONNECTION_FIELDS = {"connection": "connection", "inputs.deployment_name": "deployment_name"}


@dataclass(frozen=True)
class Workspace:
    """The workspace's three names, as ``registry.azureml.workspace_client`` takes them (keys in lower case)."""

    subscription_id: str
    resource_group_name: str
    workspace_name: str

    def settings(self) -> dict[str, str]:
        return {"subscription_id": self.subscription_id, "resource_group_name": self.resource_group_name,
                "workspace_name": self.workspace_name}


def make(getoption: Callable[[str], Any], environ: Mapping[str, str] | None = None) -> AzureMLBackend:
    """The backend from ``--promptflow-azureml-workspace`` (else the template's environment variables) and
    ``--promptflow-azureml-compute``; a missing or malformed one, or no ``azureml`` extra, is a usage error of
    one line."""
    try:
        require("azureml", "--promptflow-backend azureml", modules=MODULES["azureml"] + ("promptflow.azure",))
    except ExtraMissing as missing:
        raise pytest.UsageError(f"pytest-promptflow: {missing}") from None
    return AzureMLBackend(parse_workspace(getoption("promptflow_azureml_workspace"), environ),
                          compute_resources(getoption("promptflow_azureml_compute") or SERVERLESS))


def parse_workspace(value: str | None, environ: Mapping[str, str] | None = None) -> Workspace:
    """``SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE``, else ``SUBSCRIPTION_ID``, ``RESOURCE_GROUP_NAME`` and
    ``WORKSPACE_NAME`` from the environment."""
    from ..registry.azureml import WORKSPACE_VARIABLES

    if value:
        parts = value.split("/")
        if len(parts) != 3 or not all(part.strip() for part in parts):
            raise pytest.UsageError(f"--promptflow-azureml-workspace {value!r} is not SUBSCRIPTION/RESOURCE_GROUP/"
                                    "WORKSPACE; give the three names separated by /")
        return Workspace(*(part.strip() for part in parts))
    environ = os.environ if environ is None else environ
    values = [environ.get(name, "") for name in WORKSPACE_VARIABLES]
    if not all(values):
        raise pytest.UsageError("--promptflow-backend azureml needs a workspace; give --promptflow-azureml-workspace "
                                "SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE or set " + ", ".join(WORKSPACE_VARIABLES))
    return Workspace(*values)


def compute_resources(value: str) -> dict[str, str] | None:
    """A run's ``resources``: a named compute instance or cluster, a serverless instance type, or None
    (serverless, Azure chooses)."""
    kind, _, instance_type = value.partition(":")
    if kind == SERVERLESS:
        return {"instance_type": instance_type} if instance_type else None
    if not value.strip() or ":" in value:
        raise pytest.UsageError(f"--promptflow-azureml-compute {value!r} is neither a compute name nor "
                                f"{SERVERLESS}[:INSTANCE_TYPE]; give e.g. cpu-cluster or {SERVERLESS}:Standard_E4ds_v4")
    return {"compute": value}


@dataclass
class AzureMLBackend:
    """The ``engine.Backend`` that runs each cell as one promptflow run on a workspace. ``client``: promptflow's
    Azure ``PFClient``, made for the workspace at the first cell unless given."""

    workspace: Workspace
    resources: dict[str, str] | None
    client: Any = field(default=None, repr=False)

    def run_rows(self, work: CellWork, observer: RowObserver | None) -> list[Row]:
        submission = Submission.of(work, self.resources)
        rows = submission.rows(self._client)
        for row in rows:
            if observer is not None:
                observer.row_done(row)
        if observer is not None:
            observer.tick()
        return rows

    def close(self) -> None:
        self.client = None

    def _client(self) -> Any:
        """promptflow-azure's ``PFClient`` over the workspace's ``MLClient`` (``DefaultAzureCredential``), made as
        the azureml registry makes it."""
        if self.client is None:
            from ..registry.azureml import workspace_client

            ml_client = workspace_client("azureml backend", "to run cells on", {}, self.workspace.settings())
            self.client = load_pf_client()(ml_client=ml_client)
        return self.client


def load_pf_client() -> Any:
    """promptflow-azure's ``PFClient`` class; without promptflow-azure, one line naming the extra."""
    try:
        _alias_removed_restclient()
        from promptflow.azure import PFClient
    except ImportError as error:
        raise SpecError(None, f"azureml backend: promptflow-azure cannot be imported ({error})",
                        f"fix: {install_command('azureml')}") from None
    return PFClient


def _alias_removed_restclient() -> None:
    """promptflow-azure 1.18.5 imports ``DatastoreType`` from azure-ai-ml's private ``_restclient.v2022_10_01``,
    which azure-ai-ml 1.33 removed (promptflow issue #4176; the fix, PR #4187, is not released). The same enum is
    in its private ``_restclient.arm_ml_service``: registered under the old name when that is missing. The one
    place here that either private API matters."""
    import importlib.util
    import sys
    import types

    old = "azure.ai.ml._restclient.v2022_10_01"
    if old in sys.modules or importlib.util.find_spec(old) is not None:
        return
    from azure.ai.ml._restclient.arm_ml_service.models import DatastoreType  # private API of azure-ai-ml

    package, models = types.ModuleType(old), types.ModuleType(f"{old}.models")
    models.DatastoreType = DatastoreType  # type: ignore[attr-defined]
    package.models = models  # type: ignore[attr-defined]
    sys.modules.update({old: package, f"{old}.models": models})


@dataclass(frozen=True)
class Submission:
    """One cell as a cloud run: what goes up (``arguments`` of promptflow's ``Run``) and which row is which line."""

    work: CellWork
    lines: tuple[RowWork, ...]  # the rows that go up, line i being lines[i]; a row lacking a column stays here
    arguments: Mapping[str, Any]

    @classmethod
    def of(cls, work: CellWork, resources: dict[str, str] | None) -> Submission:
        """The cell's run, or the one line saying why it cannot run on Azure ML."""
        target = work.target
        refuse_target(target)
        lines = tuple(row for row in work.rows if not row.missing)
        mapping = dict(work.cell.dataset.mappings) or {
            name: f"${{data.{name}}}" for name in dict.fromkeys(key for row in lines for key in row.inputs)}
        arguments = {
            "flow": str(target.path if target.kind == "prompty" else target.folder),
            "column_mapping": mapping,
            "variant": run_variant(target, dict(work.cell.variants)),
            "connections": run_connections(target, dict(work.cell.overrides)),
            "init": dict(work.init) if target.kind == "flex" and work.init else None,
            "resources": resources,
            "display_name": work.cell.id,
            "tags": {"pytest_promptflow_cell": work.cell.id},
        }
        return cls(work, lines, arguments)

    def rows(self, client: Callable[[], Any]) -> list[Row]:
        """Every row of the cell, in order: the run's lines, or its failure on each."""
        if not self.lines:
            return [run_row(_never, row) for row in self.work.rows]
        with tempfile.TemporaryDirectory(prefix="pytest-promptflow-azureml-") as folder:
            entity = self.entity(write_lines(Path(folder) / "rows.jsonl", self.lines))
            where = f"Azure ML run {entity.name}"
            try:
                outputs = self._run(client(), entity)
            except SpecError:
                raise
            except Exception as error:  # a failed or cancelled run, or one Azure refused: each row says so
                return [self._row(row, None, where, failure=one_line(error)) for row in self.work.rows]
        line_of = {id(row): i for i, row in enumerate(self.lines)}
        return [self._row(row, outputs, where, line_of.get(id(row))) for row in self.work.rows]

    def entity(self, data: Path) -> Any:
        """promptflow's ``Run`` entity, as ``pf.run`` would build it, with the compute among its ``resources``; one
        that promptflow refuses (an init its entry does not take) is the cell's one line."""
        from promptflow.entities import Run

        arguments = {key: value for key, value in self.arguments.items() if value is not None}
        target = self.work.target
        try:
            return Run(data=str(data), **arguments)
        except Exception as error:  # promptflow's own validation of the run's fields
            raise SpecError(target.path, f"flow {target.name}: promptflow refuses the Azure ML run: {one_line(error)}",
                            "fix what it names, or " + THREADS_FIX) from None

    @staticmethod
    def _run(client: Any, entity: Any) -> dict[int, dict[str, Any] | None]:
        """Submits, waits (``stream`` raises the run's own error when it failed or was cancelled) and reads the
        lines: line number -> its outputs, None for a line that failed."""
        created = client.runs.create_or_update(entity)
        client.stream(created, raise_on_error=True)
        return detail_lines(client.get_details(created, all_results=True))

    def _row(self, row: RowWork, outputs: Mapping[int, Mapping[str, Any] | None] | None, where: str,
             line: int | None = None, failure: str = "") -> Row:
        """A row as the engine keeps it; one lacking a column never went up and is its own error row."""
        if row.missing:
            return run_row(_never, row)
        if failure:
            outcome = RowOutcome(None, "AzureMLRunError", f"{where}: {failure}")
        elif outputs is None or line is None or line not in outputs:
            outcome = RowOutcome(None, "MissingLine", f"{row.site}: line {line} is not in the details of {where}")
        elif outputs[line] is None:
            outcome = RowOutcome(None, "LineFailed", f"{row.site}: line {line} failed in {where}; its error is in "
                                 "the run's details on the workspace (pfazure run show-details)")
        else:
            found = dict(outputs[line] or {})
            outcome = RowOutcome(found, aggregation_input=found if self.work.target.kind == "flex" else None)
        return Row(row.index, row.data, row.inputs, outcome.outputs, outcome.error_type, outcome.error_message, 0.0,
                   aggregation_input=outcome.aggregation_input, identity=row.identity, repeat=row.repeat,
                   elsewhere=where)


def refuse_target(target: FlowTarget) -> None:
    """Only promptflow flows run on Azure ML, and a DAG's aggregation metrics would stay there."""
    if target.kind not in PROMPTFLOW_KINDS:
        what = "an agent-framework workflow" if target.kind == "maf" else "a Python callable"
        raise SpecError(target.path, f"flow {target.name} is {what}; the azureml backend runs promptflow flows "
                        "(DAG, flex, prompty) only", THREADS_FIX)
    if any(node.get("aggregation") for node in target.definition.get("nodes") or []):
        raise SpecError(target.path, f"flow {target.name} has aggregation nodes, whose metrics an Azure ML run logs "
                        "in the cloud and the azureml backend does not read back", THREADS_FIX)


def run_variant(target: FlowTarget, variants: Mapping[str, str]) -> str | None:
    """``${node.variant}`` for the cell's one node off its default variant; None when all are defaults."""
    defaults = {node: default for node, (default, _) in target.node_variants().items()}
    chosen = [(node, variant) for node, variant in variants.items() if variant != defaults.get(node)]
    if len(chosen) > 1:
        named = ", ".join(f"{node}={variant}" for node, variant in chosen)
        raise SpecError(target.path, f"flow {target.name}: the cell sets {named}, but an Azure ML run takes one "
                        "node's variant", "vary one node per cell (strategy one_at_a_time), or " + THREADS_FIX)
    return f"${{{chosen[0][0]}.{chosen[0][1]}}}" if chosen else None


def run_connections(target: FlowTarget, overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The overrides a cloud run can carry: a node's connection and deployment name; any other is one line."""
    connections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        _, node, rest = (key.split(".", 2) + ["", ""])[:3]
        if rest not in CONNECTION_FIELDS:
            raise SpecError(target.path, f"flow {target.name}: override {key} cannot be set on an Azure ML run "
                            "(promptflow's cloud run takes a node's connection and deployment_name only)",
                            "make the value a node variant, or " + THREADS_FIX)
        connections.setdefault(node, {})[CONNECTION_FIELDS[rest]] = value
    return connections or None


def write_lines(path: Path, rows: Sequence[RowWork]) -> Path:
    """The rows' dataset columns as the run's jsonl data, one line per row (and repeat)."""
    with path.open("w", encoding="utf-8") as stream:
        for row in rows:
            stream.write(json.dumps(dict(row.data), ensure_ascii=False, default=str) + "\n")
    return path


def detail_lines(details: Any) -> dict[int, dict[str, Any] | None]:
    """``get_details``' frame (``inputs.*`` and ``outputs.*`` columns, indexed by line number) as line number ->
    outputs; a line whose outputs are all missing failed (the SDK fills a failed line's outputs with None)."""
    columns = [column for column in details.columns if str(column).startswith("outputs.")]
    lines: dict[int, dict[str, Any] | None] = {}
    for line, record in zip(details.index, details.to_dict("records"), strict=True):
        outputs = {column.removeprefix("outputs."): _plain(record[column]) for column in columns}
        lines[int(line)] = outputs if any(value is not None for value in outputs.values()) else None
    return lines


def _plain(value: Any) -> Any:
    """A cell of the frame as the flow gave it: pandas' NaN for a missing value is None, numpy scalars are Python's."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def one_line(error: BaseException) -> str:
    """An SDK error's first line, shortened: the run's own error for a failed run."""
    text = str(getattr(error, "message", "") or error).strip()
    return (text.splitlines() or [type(error).__name__])[0][:300]


def _never(inputs: Mapping[str, Any]) -> RowOutcome:
    """``run_row`` only calls it for a row that can run; a row lacking a column never reaches it."""
    raise AssertionError("a row without its columns does not run")
