"""The promptflow state of one pytest session: targets, datasets, connections, the engine.

Created cheaply in pytest_configure; nothing heavy is imported or started until an item asks.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pytest

from .config import ConnectionSpec, DatasetSpec, EvaluatorSpec, ExperimentSpec
from .engine import Backend, Engine, ObserverFactory, Run
from .errors import SpecError, Where, replay_error
from .flows import FlowTarget, load_target
from .includes import check_includes_inside
from .llm.settings import LLMSettings
from .matrix import Cell, default_variants, expand, narrow

EMBEDDED_PROVIDER = "embedded:SmolLM2-135M-Instruct.Q4_1"
REPLAY_ADDRESS = "http://127.0.0.1:9"  # replay never sends, so the embedded model is not started
#: a session's shared dir, ``pytest-promptflow-<pid>-<8 hex>``; other ``pytest-promptflow-*`` names are not ours
SHARED_DIR_NAME = re.compile(r"pytest-promptflow-(\d+)-[0-9a-f]{8}")


@dataclass(frozen=True, eq=False)
class PlannedCell:
    """A cell with what it takes to run it: the experiment and its flow target."""

    spec: ExperimentSpec
    target: FlowTarget
    cell: Cell
    init: Mapping[str, Any] | None = None
    repeats: int = 1  # runs of each row: the experiment's ``repeat``, else the session's

    @property
    def id(self) -> str:
        return self.cell.id


class PromptflowSession:
    """Flow targets loaded once, datasets parsed once, runs cached by the engine."""

    def __init__(self, rootdir: Path, concurrency: int, selection: str | None,
                 shared_dir: Path | None = None, owner_pid: int | None = None,
                 llm: LLMSettings | None = None, workers: int = 1, progress: ObserverFactory | None = None,
                 answers: Any = None, repeats: int = 1, allow_outside_root: bool = False,
                 workflow_python: str = "", backend: Backend | None = None) -> None:
        from .workflows.workers import Workflows, activate

        self.rootdir = rootdir
        self.confine_to = None if allow_outside_root else rootdir  # where flows, data and evaluators must be
        self.repeats = repeats  # --promptflow-repeat / ini promptflow_repeat: an experiment's ``repeat`` wins
        self.answers = answers  # deploy.answers.EndpointAnswers: a deployment answers its flow's rows
        self.selection = selection
        self.llm = llm or LLMSettings(store=rootdir / ".promptflow-llm")
        self.workers = workers
        self.owner = owner_pid is None
        self.owner_pid = owner_pid or os.getpid()
        unique = f"pytest-promptflow-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if shared_dir is None and self.owner:
            sweep_leftovers(Path(tempfile.gettempdir()))
        self.shared_dir = shared_dir or Path(tempfile.gettempdir()) / unique
        self.engine = Engine(concurrency, progress, backend)
        self._embedded: Any = None
        self._calls: Any = None
        self._sdk_fallback: Any = None  # llm.sdk_environment.Fallback, set with the call layer
        self.worker_tally: collections.Counter[str] = collections.Counter()  # LLM call outcomes of xdist workers
        self._targets: dict[Any, FlowTarget] = {}
        self.workflows = Workflows(rootdir, workflow_python)  # workers start when a workflow's rows run
        activate(self.workflows)

    # -- planning (collection time: no promptflow import) --
    def target(self, flow: str | Path | Callable[..., Any], base_dir: Path, where: Where | None) -> FlowTarget:
        key = (id(flow), None) if callable(flow) else (None, _place(flow, base_dir, where))
        if key not in self._targets:
            target = load_target(flow, base_dir, where)
            if target.path is not None:  # a run and a released package copy its includes in
                check_includes_inside(target.path, target.definition, target.name, self.confine_to)
            self._targets[key] = self._named_apart(target)
        return self._targets[key]

    def _named_apart(self, target: FlowTarget) -> FlowTarget:
        """Two flows with one name would share a table, a best configuration and a release: a later one
        is named by its place instead (``flows.v2.classify``, or ``module.function`` for a callable)."""
        if target.name not in {known.name for known in self._targets.values()}:
            return target
        if target.path is None:
            name = f"{getattr(target.func, '__module__', '')}.{getattr(target.func, '__qualname__', target.name)}"
        else:
            place = target.path.parent if target.kind in ("dag", "flex") else target.path.with_suffix("")
            try:
                place = place.resolve().relative_to(self.rootdir.resolve())
            except ValueError:
                pass
            name = ".".join(part for part in place.parts if part not in ("/", ".."))
        return dataclasses.replace(target, name=name)

    def plan(self, spec: ExperimentSpec, base_dir: Path, init: Mapping[str, Any] | None = None) -> list[PlannedCell]:
        target = self.target(spec.flow, base_dir, spec.where)
        if spec.twin is not None and spec.twin.flow is not None:  # a twin that cannot load: one line, now
            self.target(spec.twin.flow, spec.twin.base_dir, spec.twin.where)
        node_variants = target.node_variants()
        variants = spec.variants or default_variants(node_variants, spec.where)
        target.check_overrides(variants.overrides, variants.where)
        given = spec.init if init is None else init
        cells = expand(target.name, variants, node_variants, spec.datasets, given)
        init = {**target.default_init(), **given} or None
        repeats = spec.repeat or self.repeats
        return [PlannedCell(spec, target, cell, init, repeats) for cell in narrow(cells, self.selection)]

    # -- running --
    def start_workflow_workers(self, planned: Iterable[PlannedCell]) -> None:
        """Starts the workers that the planned cells' workflows (flows or twins) run in before the first item,
        so a worker's start (its Python and agent_framework, about a second) overlaps the items before its
        first row instead of delaying it. The SDK fallback is set first: a worker inherits it."""
        if self.answers is not None:  # the endpoint test: the deployments answer, no workflow runs here
            return
        targets = []
        for cell in planned:
            targets.append(cell.target)
            twin = cell.spec.twin
            if twin is not None and twin.flow is not None:
                targets.append(self.target(twin.flow, twin.base_dir, twin.where))
        workflows = {target.identity: target for target in targets if target.kind == "maf"}
        if workflows:
            _ = self.calls  # sets the SDK fallback variables the workers inherit
        for target in workflows.values():
            self.workflows.start(target.workflow, target.name)

    @property
    def embedded(self) -> Any:
        if self._embedded is None:
            from .llm.embedded import EmbeddedModel

            self._embedded = EmbeddedModel(owner_pid=self.owner_pid)  # the machine's, under the session's lease
        return self._embedded

    @property
    def calls(self) -> Any:
        """The session's LLM call layer, made active for this process on first use."""
        if self._calls is None:
            from .llm.calls import CallLayer
            from .llm.intercept import activate

            self._calls = CallLayer(self.llm, self.workers)
            activate(self._calls)
            self._sdk_environment(self._calls)
        return self._calls

    def _sdk_environment(self, calls: Any) -> None:
        """SDK clients a flow builds from ``AZURE_OPENAI_*`` / ``OPENAI_*`` reach the embedded model when
        the user set none of those variables; the model starts only if one calls. Undone by ``close``."""
        from .llm.sdk_environment import PLACEHOLDER, Fallback

        self._sdk_fallback = Fallback()
        families = self._sdk_fallback.apply(os.environ, self.dotenv_names())
        if families:
            calls.route(PLACEHOLDER, self.embedded_address)
        for family in families:
            calls.register(PLACEHOLDER + family.path, family.connection, EMBEDDED_PROVIDER)

    def dotenv_names(self) -> set[str]:
        """The variables the ``.env`` files of the project and of its flows set (a flow may load them)."""
        from .llm.sdk_environment import dotenv_names

        folders = {self.rootdir, *(t.folder for t in self._targets.values() if t.folder is not None)}
        return dotenv_names(folder / ".env" for folder in sorted(folders))

    def llm_tally(self) -> collections.Counter[str]:
        """How this session's LLM calls were answered: this process's and its xdist workers'."""
        total = collections.Counter(self.worker_tally)
        if self._calls is not None:
            total.update(self._calls.tally)
        return total

    def embedded_address(self) -> str:
        return REPLAY_ADDRESS if self.llm.mode == "replay" else self.embedded.address()

    def connections(self, target: FlowTarget, declared: Sequence[ConnectionSpec],
                    init: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The target's connections, resolved afresh for every run: if the embedded model died,
        ``embedded.address`` starts a new one and the next cell talks to it. Each one's endpoint
        is registered with the call layer, so its calls count against its limits. One that cannot
        be resolved is one line naming the flow file and the node that names it."""
        from .flows import PROMPTFLOW_KINDS, load_promptflow, promptflow_installed
        from .llm.connections import resolve_connection

        uses = target.connection_uses(init)
        if promptflow_installed():
            load_promptflow()  # quietly, before its connections (promptflow's objects) or an evaluator import it
        elif isinstance(target, FlowTarget) and (uses or target.kind in PROMPTFLOW_KINDS):
            target.require_promptflow()  # the optional extra is missing: this flow's one line
        calls = self.calls  # active before any flow runs, whether or not it names connections
        by_name = {c.name: c for c in declared}
        connections = {}
        for name, (kind, user) in uses.items():
            kind = by_name[name].type if name in by_name else kind  # the declared type wins: a tool may take several
            try:
                resolved = resolve_connection(name, kind, declared=by_name, project_dir=self.rootdir,
                                              environ=os.environ, embedded=self.embedded_address)
            except SpecError as error:
                where = error.where or _user_line(target, user)
                raise SpecError(where, f"flow {target.name}, {_site(user)}: {error.problem}", error.fix) from None
            if resolved.address:
                calls.register(resolved.address, name, EMBEDDED_PROVIDER if resolved.embedded else None)
            connections[name] = resolved.connection
        return connections

    def rows(self, dataset: DatasetSpec) -> list[dict[str, Any]]:
        from .datasets import load_rows

        rows = load_rows(dataset)
        return rows[:self.answers.rows] if self.answers is not None and self.answers.rows else rows

    def run(self, planned: PlannedCell) -> Run:
        target: Any = planned.target
        if self.answers is not None:
            target = self.answers.target(planned.target, planned.cell.dataset.name) or target
        connections = self.connections(target, planned.spec.connections, planned.init)
        run = self.engine.run(target, planned.cell, self.rows(planned.cell.dataset), connections, planned.init,
                              planned.repeats)
        if run.replay_misses:
            raise replay_error(run.replay_misses, planned.spec.name)
        return run

    def evaluate_experiment(self, planned: PlannedCell, run: Run) -> list[Any]:
        """Every evaluator dataset that references (or is) the cell's dataset scores the run."""
        from .evaluation import evaluate

        results = []
        for evaluator in (e for e in planned.spec.evaluators if not e.refused):  # refused: warned at collection
            target = self.evaluator_target(evaluator, planned.spec.where)
            for dataset in evaluator.datasets:
                if (dataset.reference or dataset.name) != planned.cell.dataset.name:
                    continue
                data = self.rows(dataset) if dataset.reference and dataset.source else None
                scorer, connections, init = self.prepare_evaluator(target, planned.spec.connections,
                                                                   evaluator.init, evaluator.where)
                results.append(evaluate(self.engine, run, scorer, dataset.mappings, name=evaluator.name,
                                        data=data, dataset=dataset, connections=connections, init=init))
        return results

    def prepare_evaluator(self, evaluator: Any, declared: Sequence[ConnectionSpec],
                          init: Mapping[str, Any] | None, where: Where | None
                          ) -> tuple[Any, dict[str, Any], Mapping[str, Any] | None]:
        """(what scores, its connections, a flow's init): an evaluation flow's init is its ``init.json``
        under the given one; a class evaluator given init is instantiated with it (connections and model
        configurations resolved)."""
        from .flows import with_connection_objects

        if isinstance(evaluator, FlowTarget):
            init = {**evaluator.default_init(), **(init or {})} or None
            return evaluator, self.connections(evaluator, declared, init), init
        if not init:
            return evaluator, {}, None
        name = getattr(evaluator, "__name__", type(evaluator).__name__)
        if not isinstance(evaluator, type):
            raise SpecError(where, f"evaluator {name} is given init, but it is not a class",
                            "give init to a class evaluator or an evaluation flow, or drop it")
        connections = self.connections(load_target(evaluator, self.rootdir), declared, init)
        try:
            return evaluator(**with_connection_objects(init, connections)), {}, None
        except Exception as exc:  # a user's __init__: one line, not a traceback
            raise SpecError(where, f"evaluator {name}: its __init__ raised {type(exc).__name__}: {exc}",
                            "check the evaluator's init arguments") from None

    def evaluator_target(self, evaluator: EvaluatorSpec, where: Where | None) -> Any:
        if callable(evaluator.flow) and not isinstance(evaluator.flow, (str, Path)):
            return evaluator.flow
        return self.target(evaluator.flow, Path(), evaluator.where or where)

    def restore_environment(self) -> None:
        """Undo the SDK fallback's variables: called when the tests are done, before a release starts
        processes that must not inherit them, and again (harmlessly) at close."""
        if self._sdk_fallback is not None:
            self._sdk_fallback.restore(os.environ)

    def close(self) -> None:
        """The owner (controller or single process) gives up the session's lease on the shared model server,
        whoever started it; the last user's release stops it."""
        from .workflows.workers import activate as activate_workflows

        self.workflows.stop()
        activate_workflows(None)
        self.engine.close()
        if self._calls is not None:
            from .llm.intercept import activate

            activate(None)
        self.restore_environment()
        if not self.owner:
            return
        self.embedded.release()
        shutil.rmtree(self.shared_dir, ignore_errors=True)


def _place(flow: str | Path, base_dir: Path, where: Where | None) -> str:
    """Where a flow given as a path is: one place however it is written (a workflow by module and factory)."""
    from .workflows.spec import is_workflow, parse

    return str(parse(str(flow), base_dir, where)) if is_workflow(flow) else str((base_dir / flow).resolve())


def sweep_leftovers(tempdir: Path) -> list[Path]:
    """Remove the shared dirs of sessions that died without ``close`` (kill -9): this user's folders whose
    owner pid is gone. A live pid's folder, another user's and any other name stay. Returns what went."""
    removed: list[Path] = []
    if os.name != "posix":  # no uid to compare, and os.kill(pid, 0) would end the process on Windows
        return removed
    try:
        entries = list(os.scandir(tempdir))
    except OSError:
        return removed
    for entry in entries:
        match = SHARED_DIR_NAME.fullmatch(entry.name)
        try:
            ours = entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
        except OSError:
            continue
        if match and ours and not _pid_alive(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    """Whether a process has this pid (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _user_line(target: FlowTarget, user: str) -> Where | None:
    """The line of the flow file that names the node using a connection (the file, for an init argument)."""
    from .flow_errors import node_line

    if target.path is None:
        return None
    return Where(target.path) if user.startswith(("init ", "model.")) else node_line(target.path, user)


def _site(user: str) -> str:
    """``node ask`` for a node, ``init model_config`` for an init argument."""
    return user if user.startswith(("init ", "model.")) else f"node {user}"


#: the session's state in ``config.stash``: plugin.py sets it, any module may read it (none imports plugin.py)
SESSION = pytest.StashKey[PromptflowSession]()


def session_of(config: pytest.Config) -> PromptflowSession:
    return config.stash[SESSION]
