"""The ``pytest-promptflow`` command: approve, reject and list the releases the gate wrote; list and stop
the local target's endpoints; plan the rows the gates at a confidence level need; compare two runs; merge
the reports of shards; release a saved report.json; create the environment that runs agent-framework
workflows."""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, cast

import pytest

from pytest_promptflow import approvals
from pytest_promptflow.deploy.base import DeployError
from pytest_promptflow.errors import SpecError
from pytest_promptflow.project_config import add_options, ini_value, project_root
from pytest_promptflow.reporting.files import DOCUMENT
from pytest_promptflow.reporting.plan import MIN_EFFECT, POWER, plan_lines

if TYPE_CHECKING:
    from pytest_promptflow.deploy.local import LocalTarget

#: ``promptflow_deploy_dir``'s default, relative to the project root.
DEPLOY_DIR = ".promptflow-deploy"
#: the plugin's options ``pytest-promptflow release`` takes too, without their ``--promptflow-`` prefix
RELEASE_OPTIONS = ("promptflow_target", "promptflow_registry", "promptflow_env", "promptflow_endpoint_rows",
                   "promptflow_require_approval", "promptflow_mlflow_uri", "promptflow_llm", "promptflow_llm_store",
                   "promptflow_allow_outside_root")
#: ``pytest-promptflow merge``'s default output folder.
MERGED_DIR = "promptflow-merged"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("deployments", "stop"):
            _local_endpoints(args)
            return 0
        if args.command == "plan":
            _plan(args)
            return 0
        if args.command == "compare":
            _compare(args)
            return 0
        if args.command == "env":
            _environment(args)
            return 0
        if args.command == "merge":
            return _merge(args)
        if args.command == "release":
            return _release(args)
        folder = args.dir or find_release_dir(Path.cwd())
        if args.command == "approve":
            print(approvals.approve(folder, args.release, args.by or default_user(), args.note))
        elif args.command == "reject":
            print(approvals.reject(folder, args.release, args.by or default_user(), args.reason))
        else:
            _list(folder)
    except (SpecError, DeployError, pytest.UsageError) as error:
        print(f"pytest-promptflow: error: {str(error).removeprefix('pytest-promptflow: ')}", file=sys.stderr)
        return 2
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-promptflow", description="Approve, reject and list the "
                                     "releases that pytest --promptflow-release wrote; list and stop the local "
                                     "endpoints it deployed.")
    commands = parser.add_subparsers(dest="command", required=True)
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument("--dir", type=Path, help="the releases folder (default: promptflow_release_dir of the "
                                                 "project around the current folder, or ./releases)")
    approve = commands.add_parser("approve", parents=[folder], help="approve a pending release as written")
    approve.add_argument("release", help="the release id, as `pytest-promptflow releases` lists it")
    approve.add_argument("--by", help="who approves (default: git config user.name, or the OS user)")
    approve.add_argument("--note", default="", help="a note kept with the approval")
    reject = commands.add_parser("reject", parents=[folder], help="reject a release, saying why")
    reject.add_argument("release", help="the release id, as `pytest-promptflow releases` lists it")
    reject.add_argument("--reason", required=True, help="why it is rejected")
    reject.add_argument("--by", help="who rejects (default: git config user.name, or the OS user)")
    commands.add_parser("releases", parents=[folder], help="list pending, approved and rejected releases")
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--dir", type=Path, help="the local target's endpoints (default: promptflow_deploy_dir of "
                                                f"the project around the current folder, or ./{DEPLOY_DIR})")
    commands.add_parser("deployments", parents=[state], help="list the local endpoints, their traffic and deployments")
    stop = commands.add_parser("stop", parents=[state], help="stop one local deployment, or a whole endpoint, or "
                               "(--all) every endpoint and the shared embedded model")
    stop.add_argument("endpoint", nargs="?", help="the endpoint, as `pytest-promptflow deployments` lists it")
    stop.add_argument("--all", action="store_true", help="stop every local endpoint and the machine's embedded model")
    stop.add_argument("deployment", nargs="?", help="the deployment to stop (default: all, and the router)")
    plan = commands.add_parser("plan", help="from the last report (no model calls): per check at a confidence level, "
                                            "its n, bound, detectable effect and the rows it needs")
    plan.add_argument("--report", type=Path, help="the report folder or its report.json (default: promptflow_report "
                                                  "of the project around the current folder)")
    plan.add_argument("--min-effect", type=_effect, help="the change a baseline check should detect (default: "
                                                         f"promptflow_min_effect, or {MIN_EFFECT})")
    compare = commands.add_parser("compare", help="per cell, what changed between two runs: metrics (with the paired "
                                                  "interval), flipped rows, cells only in one; also as compare.html")
    for name in ("run_a", "run_b"):
        compare.add_argument(name, metavar=name.upper(), help="a run id under the report folder's runs/ (or its "
                                                             "start), a report.json, or a report folder")
    compare.add_argument("--report-dir", type=Path, help="the report folder whose runs/ holds the run ids (default: "
                                                         "promptflow_report of the project around the current folder)")
    compare.add_argument("--html", type=Path, help="where to write the page (default: compare.html in the report "
                                                   "folder, else beside B's report.json)")
    merge = commands.add_parser("merge", help="merge the reports of a suite's shards (--promptflow-shard I/N) into "
                                              "one report.json, CSV and HTML")
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="a shard's report folder (or its report.json)")
    merge.add_argument("--out", type=Path, default=Path(MERGED_DIR), help=f"where to write (default: ./{MERGED_DIR})")
    release = commands.add_parser("release", help="release a saved report.json (a session's or merged shards'): "
                                                  "choose, approve, register and deploy, as --promptflow-release does")
    release.add_argument("report", type=Path, metavar="REPORT", help="a report.json, or the report folder holding it")
    release.add_argument("--rootdir", type=Path, help="the project (default: the folder with pytest.ini, "
                                                      "pyproject.toml, tox.ini or setup.cfg around the current one)")
    release.add_argument("--out", type=Path, help="where release-<flow>.json and deploy/ go (default: the report's "
                                                  "folder)")
    add_options(release, RELEASE_OPTIONS)
    env = commands.add_parser("env", help="create the second environment that runs agent-framework workflows "
                                          "(maf: flows) beside promptflow")
    env.add_argument("kind", choices=["maf"], help="maf: agent-framework-core and agent-framework-openai")
    env.add_argument("--path", type=Path, help="where to create it (default: .promptflow-envs/maf in the project "
                                               "around the current folder, where the session looks first)")
    return parser


def _environment(args: argparse.Namespace) -> None:
    """Create (or find ready) the workflows' environment and say where its python is."""
    from pytest_promptflow.workflows.environment import create
    from pytest_promptflow.workflows.python import ENV_DIR, INI

    path = (args.path or project_root(Path.cwd()) / ENV_DIR).absolute()
    python, made = create(path)
    print(f"pytest-promptflow: {'created' if made else 'found ready'} {path} (python {python}); the session "
          f"uses {ENV_DIR} of the project root by default, or set {INI} = {python}")


def _merge(args: argparse.Namespace) -> int:
    """Write the shards' merged report; 1 when a shard failed, is missing or two ran the same cell."""
    from pytest_promptflow.reporting import files
    from pytest_promptflow.reporting.shards import merge_shards, read_shard

    shards, problems = [], []
    for text in args.dirs:
        path, document, problem = read_shard(text)
        if document is None:
            problems.append(problem)
        else:
            shards.append((path, document))
    if not shards:
        raise SpecError(None, "no shard report could be read", "pass the --promptflow-report folders of the shards")
    document, lines = merge_shards(shards)
    problems += lines
    args.out.mkdir(parents=True, exist_ok=True)
    files.write_reports(document, args.out)
    for line in problems:
        print(line)
    cells = sum(len(flow["cells"]) for flow in document["flows"])
    print(f"pytest-promptflow merge: {cells} cells of {len(shards)} shard reports in {args.out / DOCUMENT}")
    return 1 if problems else 0


def _release(args: argparse.Namespace) -> int:
    """``--promptflow-release``'s release of a saved report.json; 1 when it was refused or a deployment failed."""
    from pytest_promptflow.plugin import release_settings
    from pytest_promptflow.project_config import ProjectConfig
    from pytest_promptflow.release import release_document
    from pytest_promptflow.reporting.history import own_cells
    from pytest_promptflow.reporting.schema import read_document

    path = args.report / DOCUMENT if args.report.is_dir() else args.report
    document = own_cells(read_document(path))  # a report folder keeps earlier runs' cells: released only its own
    config = ProjectConfig((args.rootdir or project_root(Path.cwd())).absolute(),
                           {dest: getattr(args, dest) for dest in RELEASE_OPTIONS})
    settings = release_settings(cast(pytest.Config, config),  # it answers all a release asks of pytest's config
                                (args.out or path.parent).absolute())
    outcome = release_document(config, settings, document, say=functools.partial(print, flush=True))
    for line in outcome.lines:
        print(line)
    return 1 if outcome.failed else 0


def _compare(args: argparse.Namespace) -> None:
    """Print the per-cell differences of RUN_B against RUN_A and write them as a page."""
    from pytest_promptflow.reporting.compare import (
        COMPARE_HTML,
        compare_documents,
        compare_lines,
        describe,
        write_compare_html,
    )
    from pytest_promptflow.reporting.history import find_document

    root = project_root(Path.cwd())
    folder = args.report_dir or (root / configured if (configured := _ini_value(root, "promptflow_report")) else None)
    paths = [find_document(text, folder) for text in (args.run_a, args.run_b)]
    a, b = (_read_document(path) for path in paths)
    comparison = compare_documents(a, b, describe(a, str(paths[0])), describe(b, str(paths[1])))
    for line in compare_lines(comparison):
        print(line)
    page = args.html or (folder if folder is not None and folder.is_dir() else paths[1].parent) / COMPARE_HTML
    print(f"promptflow compare: page {write_compare_html(comparison, page)}")


def _read_document(path: Path) -> dict[str, Any]:
    """A report.json, or one line saying why it is none."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SpecError(path, f"cannot read the report: {error}", "point at a report.json pytest wrote") from None
    if not isinstance(document, dict) or not isinstance(document.get("flows"), list):
        raise SpecError(path, "is no promptflow report (no flows)", "point at a report.json pytest wrote")
    return document


def _effect(text: str) -> float:
    """A ``--min-effect`` between 0 and 1, or a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number between 0 and 1, e.g. 0.05")
    return value


def _plan(args: argparse.Namespace) -> None:
    """Print ``plan_lines`` for the last report.json."""
    root = project_root(Path.cwd())
    folder = args.report or (root / configured if (configured := _ini_value(root, "promptflow_report")) else None)
    if folder is None:
        raise SpecError(None, "no report to plan from", "pass --report DIR (a pytest --promptflow-report folder) "
                                                        "or set promptflow_report")
    path = folder if folder.suffix == ".json" else folder / DOCUMENT
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SpecError(None, f"cannot read the report {path}: {error}",
                        "run pytest with --promptflow-report DIR first, then point --report at DIR") from None
    min_effect = args.min_effect or _effect(_ini_value(root, "promptflow_min_effect") or str(MIN_EFFECT))
    print(f"promptflow plan from {path} (min effect {min_effect:g}, {POWER:.0%} power):")
    for line in plan_lines(document, min_effect):
        print(line)


def _local_endpoints(args: argparse.Namespace) -> None:
    from pytest_promptflow.deploy.local import LocalTarget

    root = project_root(Path.cwd())
    target = LocalTarget(args.dir or root / (_ini_value(root, "promptflow_deploy_dir") or DEPLOY_DIR))
    endpoints = target.endpoints()
    if args.command == "deployments":
        for endpoint in endpoints:
            _show(target, endpoint)
        if not endpoints:
            print(f"no endpoints in {target.state_dir}")
        return
    if args.all or args.endpoint is None:
        if args.endpoint is not None or args.deployment is not None or not args.all:
            raise DeployError("stop takes an endpoint (and maybe a deployment), or --all alone")
        _stop_all(target, endpoints)
        return
    if args.endpoint not in endpoints:
        raise DeployError(f"no endpoint {args.endpoint!r} in {target.state_dir}; "
                          f"it has: {', '.join(endpoints) or 'none'}")
    if args.deployment is None:
        target.stop(args.endpoint)
        print(f"stopped endpoint {args.endpoint}")
        return
    known = target.deployments(args.endpoint)
    if args.deployment not in known:
        raise DeployError(f"endpoint {args.endpoint!r} has no deployment {args.deployment!r}; "
                          f"it has: {', '.join(known) or 'none'}")
    target.remove(args.endpoint, args.deployment)
    print(f"stopped deployment {args.deployment} of endpoint {args.endpoint}")


def _stop_all(target: LocalTarget, endpoints: list[str]) -> None:
    """Every local endpoint, then the shared embedded model, whoever still uses it."""
    from pytest_promptflow.llm.embedded import EmbeddedModel

    for endpoint in endpoints:
        target.stop(endpoint)
        print(f"stopped endpoint {endpoint}")
    model = EmbeddedModel()
    print(f"stopped the embedded model ({model.shared_dir})" if model.started else "no embedded model was running")
    model.stop()


def _show(target: LocalTarget, endpoint: str) -> None:
    """The endpoint, its split, and per deployment what the router counted: the A/B comparison."""
    try:
        router = target.router_url(endpoint)
        counted = target.stats(endpoint)["deployments"]
    except DeployError:
        router, counted = "router not running", {}
    traffic = target.traffic(endpoint)
    split = " ".join(f"{name}={share}%" for name, share in traffic.items()) or "none"
    print(f"{endpoint}  {router}  traffic {split}")
    for name, deployment in target.deployments(endpoint).items():
        model = deployment.model
        print(f"  {name:<8} {model.get('name', '?')} v{model.get('version', '?')}  {traffic.get(name, 0):>3}%  "
              f"{'running  ' if deployment.url else ''}{deployment.detail}")
        if name in counted:
            seen = counted[name]
            print(f"           {seen['requests']} requests, {seen['errors']} errors, latency mean "
                  f"{seen['latency_mean']:.3f} s, p95 {seen['latency_p95']:.3f} s")


def _list(folder: Path) -> None:
    found = approvals.releases(folder)
    if not found:
        print(f"no releases in {folder}")
        return
    for path, record in found:
        decisions = record["decisions"]
        who = f"{decisions[-1]['by']} at {decisions[-1]['at']}" if decisions else f"written {record['created']}"
        print(f"{path.stem}  {record['status']:<8}  flow={record['flow']}  digest={record['digest'][:12]}  {who}")


def default_user() -> str:
    """``git config user.name``, or the OS user when git has none."""
    try:
        name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name.strip() or getpass.getuser()


def find_release_dir(start: Path) -> Path:
    """``promptflow_release_dir`` of the nearest project folder above ``start``."""
    root = project_root(start)
    return approvals.release_dir(root, _ini_value(root, "promptflow_release_dir"))


def _ini_value(folder: Path, key: str) -> str | None:
    """Ini option ``key`` of the project in ``folder`` as text, if set there."""
    value = ini_value(folder, key)
    return str(value) if value else None


if __name__ == "__main__":
    sys.exit(main())
