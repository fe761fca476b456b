"""pytest hooks, options, the ``promptflow`` marker and the ``flow_run`` fixture; all delegate.

Inert unless used: importing this module imports no promptflow, pandas or Azure SDK.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, Generator, Iterable

import pytest

from .backends import BACKENDS, make_backend
from .config import REPEAT_FIX, parse_repeat
from .errors import SpecError, Where, unforeseen
from .isolation import isolate
from .llm.retry import RetryPolicy
from .llm.settings import MODES, LLMSettings, parse_limits, parse_mode, parse_prices
from .matrix import parse_selection
from .project_root import ALLOW_INI, ALLOW_OPTION
from .reporting.collector import Reports, ReportsPlugin
from .reporting.progress import progress_factory
from .reporting.tracking import project_store, register_tracking
from .session import SESSION, PromptflowSession, session_of
from .shard import Shard, parse_shard, shard_line, split_items

REPORTS = pytest.StashKey[Reports]()
EXPERIMENT_FILES = pytest.StashKey[set[Path]]()
#: nodeid -> the worst rows and log line of its failing metric assertion, shown in a section of its failure
FAILURE_DETAILS = pytest.StashKey[dict[str, list[str]]]()
SHARD = pytest.StashKey[Shard]()
SHARD_LINE = pytest.StashKey[str]()
HEADER = pytest.StashKey[list[str]]()
LLM_TALLY = "promptflow_llm_tally"
MARKER_HELP = (
    "promptflow(flow, data, variants=None, overrides=None, strategy='matrix', mappings=None, init=None, "
    "baseline=None, repeat=None, twin=None, twin_of=None): run the test once per cell of flow x node variants x "
    "overrides x dataset (each row repeat times); it gets the run as flow_run; baseline (cell:<configuration>, "
    "released or a rows.csv) is what flow_run.expect('m > baseline at 95%') compares with; twin (a flow) or twin_of "
    "(a stored report) adds the parity checks of a migration"
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _repeat(text: str) -> int:
    try:
        return parse_repeat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; {REPEAT_FIX}") from None


def repeats(config: pytest.Config) -> int:
    """--promptflow-repeat, else ini promptflow_repeat; a bad ini value is one usage line with the fix."""
    try:
        return _option_or_ini(config, "promptflow_repeat", _repeat)
    except ValueError as error:
        raise pytest.UsageError(f"pytest-promptflow: {error}") from None


def _llm_mode(text: str) -> str:
    try:
        return parse_mode(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def llm_settings(config: pytest.Config) -> LLMSettings:
    """Options win over ini values; a bad ini value is a usage error that says how to fix it."""
    try:
        store = Path(config.getoption("promptflow_llm_store") or config.getini("promptflow_llm_store"))
        retry = RetryPolicy(
            retries=_option_or_ini(config, "promptflow_llm_retries", _natural),
            timeout=_option_or_ini(config, "promptflow_llm_timeout", _positive_float),
            backoff=_positive_float(config.getini("promptflow_llm_backoff")),
        )
        return LLMSettings(
            mode=config.getoption("promptflow_llm") or parse_mode(config.getini("promptflow_llm")),
            store=store if store.is_absolute() else config.rootpath / store,
            retry=retry,
            limits=parse_limits(config.getini("promptflow_llm_limits")),
            prices=parse_prices(config.getini("promptflow_llm_prices")),
        )
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise pytest.UsageError(f"pytest-promptflow: {error}") from None


def _option_or_ini(config: pytest.Config, name: str, parse: Callable[[str], Any]) -> Any:
    value = config.getoption(name)
    if value is not None:
        return value
    try:
        return parse(config.getini(name))
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise ValueError(f"ini {name}: {error}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    """Before any conftest or test module can import promptflow or azure-ai-evaluation: their home and
    telemetry settings (see ``isolation``), whatever the import order."""
    isolate()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from .hookspecs import ReleaseHooks

    pluginmanager.add_hookspecs(ReleaseHooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("promptflow", "prompt-flow evaluation")
    group.addoption("--promptflow-env", metavar="ENV", default=None,
                    help="apply the overlay experiment.<ENV>.yaml to every experiment.yaml that has one (an ENV "
                    "no overlay and no deployment_config.json entry names is a usage error)")
    group.addoption("--promptflow-variants", metavar="NODE=VARIANT[,...]", type=parse_selection, default=None,
                    help="run only the cells with these node variants, e.g. classify=variant_1")
    group.addoption("--promptflow-concurrency", metavar="N", type=_positive_int, default=None,
                    help="rows run at once per cell (default: ini promptflow_concurrency, 4)")
    parser.addini("promptflow_concurrency", "rows run at once per cell", default="4")
    group.addoption("--promptflow-backend", choices=sorted(BACKENDS), default="threads",
                    help="where a cell's rows run: threads in this process (default), ray (a Ray cluster) or azureml "
                    "(Azure ML runs)")
    group.addoption("--promptflow-ray-address", metavar="ADDR", default=None,
                    help="with --promptflow-backend ray: the Ray cluster's head node, HOST:PORT")
    group.addoption("--promptflow-azureml-workspace", metavar="SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE", default=None,
                    help="the Azure ML workspace --promptflow-backend azureml runs cells on (default: "
                    "SUBSCRIPTION_ID, RESOURCE_GROUP_NAME, WORKSPACE_NAME, as the azureml registry reads them)")
    group.addoption("--promptflow-azureml-compute", metavar="NAME|serverless[:INSTANCE_TYPE]", default="serverless",
                    help="where an azureml run runs: a compute instance or cluster by name, or serverless (default; "
                    "Azure chooses the instance type unless one is given)")
    group.addoption("--promptflow-repeat", metavar="K", type=_repeat, default=None,
                    help="run each row K times: pass@k, pass^k and flaky rows, intervals over rows (default: ini "
                    "promptflow_repeat, 1; an experiment's repeat: or the marker's repeat= wins)")
    parser.addini("promptflow_repeat", "runs of each row (an experiment's repeat: wins)", default="1")
    group.addoption("--promptflow-llm", metavar="MODE", type=_llm_mode, default=None,
                    help="LLM calls: " + "; ".join(f"{mode}: {text}" for mode, text in MODES.items()))
    group.addoption("--promptflow-llm-store", metavar="DIR", default=None,
                    help="folder of stored LLM answers (default: ini promptflow_llm_store, .promptflow-llm)")
    group.addoption("--promptflow-llm-retries", metavar="N", type=_natural, default=None,
                    help="retries of an LLM call after a 429, 5xx, timeout or refused connection (default 4)")
    group.addoption("--promptflow-llm-timeout", metavar="SECONDS", type=_positive_float, default=None,
                    help="seconds an LLM call may take before it is retried (default 120)")
    group.addoption("--promptflow-shard", metavar="I/N", default=None,
                    help="run shard I of N: every Nth cell, round-robin over the sorted cell ids (CI parallel jobs; "
                    "pytest-promptflow merge joins their reports)")
    group.addoption("--promptflow-report", metavar="DIR", default=None,
                    help="write the reports (JSON, CSV, HTML) to DIR (default: ini promptflow_report; none)")
    parser.addini("promptflow_report", "folder for the reports, relative to the rootdir (empty: none)", default="")
    group.addoption("--promptflow-mlflow", action="store_true", default=False,
                    help="log each cell as an MLflow run (default: ini promptflow_mlflow; off)")
    group.addoption("--promptflow-mlflow-uri", metavar="URI", default=None,
                    help="MLflow tracking URI; implies --promptflow-mlflow (default: ini promptflow_mlflow_uri, "
                    "sqlite:///<rootdir>/mlflow.db)")
    parser.addini("promptflow_mlflow", "log each cell as an MLflow run", type="bool", default=False)
    parser.addini("promptflow_mlflow_uri", "MLflow tracking URI (a relative sqlite path is relative to the rootdir)",
                  default="")
    parser.addini("promptflow_mlflow_experiment", "MLflow experiment of the runs", default="pytest-promptflow")
    group.addoption("--promptflow-release", action="store_true", default=False,
                    help="after a passing session, register each flow's chosen configuration and its datasets")
    group.addoption("--promptflow-registry", choices=("mlflow", "azureml"), default=None,
                    help="where a release registers (default: ini promptflow_registry, mlflow)")
    group.addoption("--promptflow-require-approval", action="store_true", default=None,
                    help="a release waits for `pytest-promptflow approve` (default: ini promptflow_release_approval)")
    group.addoption("--promptflow-target", metavar="TARGET", default=None,
                    help="where a release deploys: local, docker, kubernetes, azureml or none "
                    "(default: ini promptflow_target, local)")
    group.addoption("--promptflow-endpoint-rows", metavar="N", type=_natural, default=None,
                    help="rows of each dataset the endpoint test sends to a new deployment (default: ini "
                    "promptflow_endpoint_rows; 0: all)")
    group.addoption("--promptflow-endpoint-answers", metavar="FILE", default=None,
                    help="(used by the endpoint test) answer each flow's rows from a deployment's answers in FILE")
    parser.addini("promptflow_target", "where a release deploys: local, docker, kubernetes, azureml or none",
                  default="local")
    parser.addini("promptflow_deployment_config", "the GenAIOps template's deployment_config.json, relative to "
                  "the rootdir (optional)", default="deployment_config.json")
    parser.addini("promptflow_endpoint_rows", "rows of each dataset the endpoint test sends (0: all)", default="0")
    parser.addini("promptflow_endpoint_latency", "seconds within which a new deployment answers 95% of the endpoint "
                  "test's requests", default="60")
    parser.addini("promptflow_deploy_dir", "the local target's endpoints, relative to the rootdir",
                  default=".promptflow-deploy")
    parser.addini("promptflow_registry", "where a release registers: mlflow or azureml", default="mlflow")
    parser.addini("promptflow_release_approval", "a release waits for a recorded approval", type="bool",
                  default=False)
    parser.addini("promptflow_release_pins", "FLOW: CONFIGURATION lines: release this configuration, not the best",
                  type="linelist", default=[])
    parser.addini("promptflow_release_dir", "folder of pending and approved releases, relative to the rootdir",
                  default="releases")
    parser.addini("promptflow_primary_metrics", "the metric that picks a flow's best cell: FLOW: METRIC lines "
                  "(a bare METRIC for every flow); default: the first metric an evaluator reports",
                  type="linelist", default=[])
    parser.addini("promptflow_llm", "LLM call mode: " + ", ".join(MODES), default="cache")
    parser.addini("promptflow_llm_store", "folder of stored LLM answers, relative to the rootdir",
                  default=".promptflow-llm")
    parser.addini("promptflow_llm_retries", "retries of a failed LLM call", default="4")
    parser.addini("promptflow_llm_timeout", "seconds an LLM call may take", default="120")
    parser.addini("promptflow_llm_backoff", "seconds before the first retry, doubled each time", default="1")
    parser.addini("promptflow_llm_limits", "per connection: NAME concurrency=N rpm=M ('*' for all)",
                  type="linelist", default=[])
    parser.addini("promptflow_llm_prices", "per model: NAME prompt=P completion=C (per 1K tokens)",
                  type="linelist", default=[])
    group.addoption("--promptflow-strict-power", action="store_true", default=None,
                    help="a baseline comparison that cannot detect promptflow_min_effect fails "
                    "(default: ini promptflow_strict_power; off: it passes as 'ok (underpowered ...)')")
    parser.addini("promptflow_strict_power", "an underpowered baseline comparison fails", type="bool", default=False)
    parser.addini("promptflow_min_effect", "the difference a baseline comparison should detect with 80% power",
                  default="0.05")
    parser.addini("promptflow_max_unpaired", "the share of rows a baseline comparison may leave unpaired",
                  default="0.10")
    parser.addini("promptflow_twin_margin", "how far a twin's metric may be from its original's (the 95% interval "
                  "of the paired difference within +-margin)", default="0.03")
    group.addoption(ALLOW_OPTION, action="store_true", default=None,
                    help="let experiments and markers use flows, data and evaluators outside the project root "
                    f"(default: ini {ALLOW_INI}; off)")
    parser.addini(ALLOW_INI, "flows, data and evaluators may be outside the project root", type="bool",
                  default=False)
    parser.addini("promptflow_workflow_python", "the Python (with agent-framework) that runs maf: workflows, "
                  "relative to the rootdir (default: .promptflow-envs/maf, else this one)", default="")
    parser.addini("promptflow_progress", "show a long cell's progress (rows, rows/s, cache hits, errors) "
                  "on a terminal", type="bool", default=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    workerinput = getattr(config, "workerinput", None) or {}
    shared_dir = workerinput.get("promptflow_shared_dir")
    concurrency = config.getoption("promptflow_concurrency") or int(config.getini("promptflow_concurrency"))
    environment = {"promptflow_env": config.getoption("promptflow_env") or ""}
    if config.getoption("promptflow_shard") is not None:
        try:
            config.stash[SHARD] = parse_shard(config.getoption("promptflow_shard"))
        except ValueError as error:
            raise pytest.UsageError(f"pytest-promptflow: {error}") from None
        environment["shard"] = str(config.stash[SHARD])
    config.stash[SESSION] = PromptflowSession(
        config.rootpath, concurrency, config.getoption("promptflow_variants"),
        shared_dir=Path(shared_dir) if shared_dir else None,
        owner_pid=workerinput.get("promptflow_owner_pid"),
        llm=llm_settings(config),
        workers=int(workerinput.get("workercount", 1)),
        progress=progress_factory(config),
        answers=_endpoint_answers(config),
        repeats=repeats(config),
        allow_outside_root=_option_or_ini(config, ALLOW_INI, bool),
        workflow_python=config.getini("promptflow_workflow_python"),
        backend=make_backend(config.getoption("promptflow_backend"), config.getoption),
    )
    _quiet_promptflow(config)
    reports = config.stash[REPORTS] = Reports(
        config.rootpath, _report_folder(config), _flow_lines(config.getini("promptflow_primary_metrics")),
        {**environment, "llm_mode": config.stash[SESSION].llm.mode},
    )
    _comparison_settings(config)
    config.pluginmanager.register(ReportsPlugin(config, reports), "promptflow-reports")
    register_tracking(config)
    if config.getoption("promptflow_release") and not config.getoption("promptflow_endpoint_answers"):
        from .release import ReleasePlugin

        config.pluginmanager.register(ReleasePlugin(config, _release_settings(config), reports), "promptflow-release")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(config), "promptflow-xdist")


def _quiet_promptflow(config: pytest.Config) -> None:
    """promptflow's log lines go to promptflow.log in the report folder (else a private temp folder)."""
    from .promptflow_log import log_path, start

    start(log_path(_report_folder(config)), fresh=session_of(config).owner)


def _comparison_settings(config: pytest.Config) -> None:
    """Baseline comparisons' power settings; a bad ini value is a usage error that says how to fix it."""
    from .baseline import SETTINGS
    from .pairing import ComparisonSettings

    strict = config.getoption("promptflow_strict_power")
    try:
        min_effect = _fraction(config, "promptflow_min_effect", zero=False)
        max_unpaired = _fraction(config, "promptflow_max_unpaired", zero=True)
        twin_margin = _fraction(config, "promptflow_twin_margin", zero=False)
    except ValueError as error:
        raise pytest.UsageError(f"pytest-promptflow: {error}") from None
    config.stash[SETTINGS] = ComparisonSettings(min_effect, config.getini("promptflow_strict_power") if strict is None
                                                else strict, max_unpaired, functools.partial(_released_rows, config),
                                                twin_margin)


def _released_rows(config: pytest.Config, flow: str, dataset: str) -> Path | None:
    """The rows file the registry keeps with ``flow``'s latest released version (``baseline: released``)."""
    from .release import make_registry

    return make_registry(config, _release_settings(config)).released_rows(flow, dataset)


def _fraction(config: pytest.Config, name: str, zero: bool) -> float:
    """An ini value between 0 (allowed when ``zero``) and 1, e.g. ``0.05``."""
    text = config.getini(name)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 <= value < 1 and (zero or value > 0)):
        raise ValueError(f"ini {name} = {text!r}; write a fraction {'from' if zero else 'between'} 0 and 1, e.g. 0.05")
    return value


def _endpoint_answers(config: pytest.Config) -> Any:
    """In the endpoint test's child pytest: the deployments' answers that stand in for their flows."""
    path = config.getoption("promptflow_endpoint_answers")
    if not path:
        return None
    from .deploy.answers import EndpointAnswers

    return EndpointAnswers.read(Path(path))


def _release_settings(config: pytest.Config) -> Any:
    return release_settings(config, config.stash[REPORTS].folder)


def release_settings(config: pytest.Config, report_folder: Path | None) -> Any:
    """A release's settings from its options and ini keys: a session's, or `pytest-promptflow release`'s
    (``project_config.ProjectConfig``, the same options and keys read without a session)."""
    from .release import ReleaseSettings

    registry = config.getoption("promptflow_registry") or config.getini("promptflow_registry")
    if registry not in ("mlflow", "azureml"):
        raise pytest.UsageError(f"pytest-promptflow: promptflow_registry = {registry!r}; use mlflow or azureml")
    approval = config.getoption("promptflow_require_approval")
    release_dir = Path(config.getini("promptflow_release_dir"))
    return ReleaseSettings(
        registry=registry,
        approval=config.getini("promptflow_release_approval") if approval is None else approval,
        pins=_flow_lines(config.getini("promptflow_release_pins")),
        release_dir=release_dir if release_dir.is_absolute() else config.rootpath / release_dir,
        report_folder=report_folder,
        store=project_store(config),
        rootdir=config.rootpath,
        deploy=_deploy_settings(config, release_dir, report_folder),
    )


def _deploy_settings(config: pytest.Config, release_dir: Path, report_folder: Path | None) -> Any:
    from .deploy.settings import check as check_deployment_config
    from .deploy.stage import TARGETS, DeploySettings

    path = functools.partial(_rooted, config)
    target = config.getoption("promptflow_target") or config.getini("promptflow_target")
    if target == "none":
        return None
    if target not in TARGETS and not config.pluginmanager.hook.pytest_promptflow_deploy_target.get_hookimpls():
        raise pytest.UsageError(f"pytest-promptflow: no deployment target {target!r}: use one of "
                                f"{', '.join(TARGETS)}, or add it with a pytest_promptflow_deploy_target hook")
    config_file = config.getini("promptflow_deployment_config")
    try:
        rows = _option_or_ini(config, "promptflow_endpoint_rows", _natural)
        latency = _positive_float(config.getini("promptflow_endpoint_latency"))
        check_deployment_config(path(config_file) if config_file else None, target)
        llm = llm_settings(config)
    except (ValueError, argparse.ArgumentTypeError, SpecError) as error:
        raise pytest.UsageError(f"pytest-promptflow: {error}") from None
    return DeploySettings(
        target=target,
        config_file=path(config_file) if config_file else None,
        env=config.getoption("promptflow_env") or "",
        rows=rows,
        latency=latency,
        state_dir=path(config.getini("promptflow_deploy_dir")),
        output_dir=(report_folder or release_dir) / "deploy",
        llm=(llm.mode, llm.store),
    )


def _report_folder(config: pytest.Config) -> Path | None:
    folder = config.getoption("promptflow_report") or config.getini("promptflow_report")
    if not folder:
        return None
    path = Path(folder)
    return path if path.is_absolute() else config.rootpath / path


def _flow_lines(lines: list[str]) -> dict[str, str]:
    """``FLOW: VALUE`` lines (a bare ``VALUE`` is for every flow, ``*``)."""
    found = {}
    for line in (line.strip() for line in lines):
        if line:
            flow, sep, value = line.partition(":")
            found[flow.strip() if sep else "*"] = (value if sep else flow).strip()
    return found


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION in config.stash:
        from .promptflow_log import stop

        config.stash[SESSION].close()
        stop()


class XdistHooks:
    """Hands the shared folder to every worker; schedules by cell, prints the header and checks the env from what
    the workers collected."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.cells: dict[str, str] = {}  # node id -> its cell, as the workers collected them
        self.header_shown = False

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """``load`` (``-n`` without ``--dist``) keeps a cell's items on one worker; other modes are xdist's."""
        if config.getoption("dist") != "load":
            return None
        from .distribution import CellScheduling

        return CellScheduling(config, log, self.cells)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        session = session_of(self.config)
        node.workerinput["promptflow_shared_dir"] = str(session.shared_dir)
        node.workerinput["promptflow_owner_pid"] = session.owner_pid

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """The controller collects nothing itself: the experiment files are those the workers' node ids name."""
        from .experiment import is_experiment_file

        files = {self.config.rootpath / nodeid.partition("::")[0] for nodeid in ids}
        check_env(self.config, {f for f in files if f.suffix in (".yaml", ".yml") and is_experiment_file(f)})
        self._read_collection(node.workerinput["workerid"])

    def _read_collection(self, worker: str) -> None:
        """The worker's cells for the scheduler; from the first, the header and the shard's deselected count."""
        from .distribution import read_collection

        collected = read_collection(session_of(self.config).shared_dir, worker)
        self.cells.update(collected["cells"])
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if self.header_shown or reporter is None:
            return
        self.header_shown = True
        for line in collected["header"]:
            reporter.write_line(line)
        if collected["deselected"]:  # the summary's "N deselected": the workers' pytest_deselected stay there
            reporter.stats.setdefault("deselected", []).extend([None] * collected["deselected"])

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        tally = getattr(node, "workeroutput", {}).get(LLM_TALLY, {})
        session_of(self.config).worker_tally.update(tally)


def pytest_sessionfinish(session: pytest.Session) -> None:
    session_of(session.config).restore_environment()  # before a release (trylast) starts its processes
    session.config.stash[REPORTS].environment["exit_status"] = int(session.exitstatus)  # merge of shards reads it
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its LLM counts go to the controller
        workeroutput[LLM_TALLY] = dict(session_of(session.config).llm_tally())


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from .reporting.terminal import llm_summary

    for line in llm_summary(session_of(config)):
        terminalreporter.write_line(line)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    from .experiment import is_experiment_file

    if file_path.suffix in (".yaml", ".yml") and is_experiment_file(file_path):
        from .items import ExperimentFile

        parent.config.stash.setdefault(EXPERIMENT_FILES, set()).add(file_path)
        return ExperimentFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)  # after -k and -m: a shard of what they leave
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--promptflow-shard I/N``, the items of the other shards' cells are deselected; an xdist worker then
    writes what the controller needs to schedule by cell (see ``distribution``)."""
    shard = config.stash.get(SHARD, None)
    others: list[pytest.Item] = []
    if shard is not None:
        kept, others = split_items(items, shard)
        config.stash[SHARD_LINE] = shard_line(shard, kept, items)
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = kept
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # the controller schedules by cell and prints the header from what this writes
        from .distribution import write_collection

        write_collection(session_of(config).shared_dir, workerinput["workerid"], items,
                         _header_lines(config, items), len(others))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Checked here, once every experiment file is collected, before anything runs or deploys (an xdist
    worker leaves it to the controller, which sees what the workers collected)."""
    if not hasattr(session.config, "workerinput"):
        files: set[Path] = session.config.stash.get(EXPERIMENT_FILES, set())
        check_env(session.config, files)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Before the first item (after the header): the workflow workers the selected items need start now. An
    xdist worker does not know yet which items it will run; their workers start with their first row."""
    if session.config.option.collectonly or hasattr(session.config, "workerinput") or session.testsfailed:
        return
    from .reporting.header import planned_cell

    session_of(session.config).start_workflow_workers(
        planned for planned in map(planned_cell, session.items) if planned is not None)


def check_env(config: pytest.Config, experiment_files: Iterable[Path]) -> None:
    """A ``--promptflow-env`` that no overlay and no deployment entry knows is a typo, not a silent base run:
    a usage error naming the envs that exist. One env still serves every use case when any overlay beside
    a collected experiment file or any deployment entry names it."""
    env = config.getoption("promptflow_env")
    if not env or config.getoption("promptflow_endpoint_answers"):  # the endpoint test reruns a subset
        return
    known = _known_envs(config, experiment_files)
    if env not in known:
        raise pytest.UsageError(
            f"pytest-promptflow: --promptflow-env {env!r} matches no overlay (experiment.<env>.yaml beside a "
            f"collected experiment file) and no ENV_NAME of the deployment config; envs that exist: "
            f"{', '.join(sorted(known)) or 'none'}")


def _known_envs(config: pytest.Config, experiment_files: Iterable[Path]) -> set[str]:
    """The envs the collected experiment files' overlays and the deployment config's entries name."""
    from .deploy.settings import env_names
    from .experiment import overlay_envs

    known = set().union(*(overlay_envs(path) for path in experiment_files))
    config_file = config.getini("promptflow_deployment_config")
    try:
        known |= env_names(_rooted(config, config_file) if config_file else None)
    except SpecError:  # a broken file is reported by the release that reads it
        pass
    return known


def _rooted(config: pytest.Config, value: str) -> Path:
    return Path(value) if Path(value).is_absolute() else config.rootpath / value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("promptflow")
    if marker is None:
        return
    if "flow_run" not in metafunc.fixturenames:  # the item fails alone: see pytest_runtest_setup
        return
    where = Where(metafunc.definition.path, _line_of(metafunc.function))
    from .marker import spec_from_marker

    session = session_of(metafunc.config)
    try:
        spec, init = spec_from_marker(marker, where, session.rootdir, session.confine_to)
        planned: list[Any] = session.plan(spec, session.rootdir, init)
    except SpecError as error:  # one erroring item (flow_run raises it); other tests still run
        planned = [error]
    except Exception as exc:  # never a collection error: that would stop every other test
        planned = [unforeseen(exc, where, "promptflow marker")]
    metafunc.parametrize("flow_run", planned, ids=[getattr(p, "id", "bad-spec") for p in planned], indirect=True)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked promptflow that takes no flow_run errors alone, in one line; the session goes on."""
    if (isinstance(item, pytest.Function) and item.get_closest_marker("promptflow") is not None
            and "flow_run" not in item.fixturenames):
        raise SpecError(Where(item.path, _line_of(item.function)), "@pytest.mark.promptflow needs the test to take "
                        "a flow_run argument", f"write def {item.originalname}(flow_run): ...")


def _line_of(function: Any) -> int | None:
    try:
        return inspect.getsourcelines(function)[1]
    except (OSError, TypeError):
        return None


@pytest.fixture
def flow_run(request: pytest.FixtureRequest) -> Any:
    """The run of this item's cell (run once per session, shared by every test of the cell)."""
    from .results import FlowRun

    session = session_of(request.config)
    planned = getattr(request, "param", None)
    if planned is None:
        pytest.fail("flow_run is given by @pytest.mark.promptflow(flow=..., data=...)", pytrace=False)
    if isinstance(planned, SpecError):
        raise planned
    return FlowRun(session, planned, session.run(planned), request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Once a marker test's body passed, its cell's parity with a declared twin (``twin=``) must hold too; when
    the body failed, the parity still goes into the reports."""
    check_twin = getattr(getattr(item, "funcargs", {}).get("flow_run"), "check_twin", None)
    if check_twin is None:
        return (yield)
    try:
        yield
    except (Exception, pytest.fail.Exception):
        check_twin(fail=False)
        raise
    check_twin()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A SpecError raised while an item runs is shown as its one line, not a traceback."""
    report = yield
    if call.excinfo is not None and isinstance(call.excinfo.value, SpecError):
        from .flow_errors import with_traceback

        show = item.config.get_verbosity() >= 2 or item.config.getoption("tbstyle") == "long"
        report.longrepr = with_traceback(call.excinfo.value, show)
    details = item.config.stash.get(FAILURE_DETAILS, {}).pop(item.nodeid, None)
    add_section = getattr(report.longrepr, "addsection", None)  # after the traceback, in JUnit too
    if details and report.failed and add_section is not None:
        add_section("promptflow", "\n".join(details))
    if report.when == "call" or (report.when == "setup" and report.failed):
        record = item.config.stash[REPORTS].record(item, report)
        if record is not None:
            report.promptflow = record  # type: ignore[attr-defined]  # plain data: crosses from xdist workers
            from .reporting.html_extras import attach_html_extras

            attach_html_extras(item.config, report, record)
    return report


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """A failing ``assert metrics[...] >= x`` prints the threshold table (its verdict is already recorded: the
    comparison itself records it, see MetricValue)."""
    from .evaluation import MetricValue

    if isinstance(left, MetricValue) or isinstance(right, MetricValue):
        from .reporting.failure import metric_assertion_lines, metric_details

        nodeid = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        config.stash.setdefault(FAILURE_DETAILS, {})[nodeid] = metric_details(left, right)
        return metric_assertion_lines(op, left, right)
    return None


def pytest_report_collectionfinish(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    return _header_lines(config, items)


def _header_lines(config: pytest.Config, items: list[pytest.Item]) -> list[str]:
    """The lines under "collected N items", computed once (an xdist worker computes them for the controller)."""
    if HEADER not in config.stash:
        from .reporting.header import collection_lines

        shard = [config.stash[SHARD_LINE]] if SHARD_LINE in config.stash else []
        config.stash[HEADER] = shard + collection_lines(session_of(config), items)
    return config.stash[HEADER]
