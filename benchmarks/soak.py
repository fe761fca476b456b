"""Soak: consecutive suite runs against a flaky LLM endpoint, every fifth killed with SIGKILL at a random
moment; afterwards the answer store, the MLflow registry and the local deployments must be consistent,
and a clean run must give the verdicts of a run that was never interrupted.

    source /work/venv/bin/activate
    python benchmarks/soak.py                      # 20 runs, a kill in every fifth; about 6 minutes
    python benchmarks/soak.py --runs 3 --kill-every 3 --seed 7

It writes a small project to a temporary folder (``soak_project.py``: one DAG flow with an LLM node in two
variants, an evaluation flow, 8 rows, experiment.yaml with thresholds, deployment_config.json) and starts
two real endpoints on 127.0.0.1 (``tests/fault_endpoint.py``): the suite's, which fails 30% of requests
(429, 500, a timeout, a dropped connection, a malformed body, a body that is no completion; drawn from
the seed), and a fault-free one for the deployments, so that a release's endpoint test judges the
deployment. Both answer by echoing the prompt, so the verdicts follow from the prompts alone.

Each run is ``pytest evals -q --promptflow-llm=record --promptflow-release`` in a subprocess of its own
session, with the flow's python node marked with the run's number (a change that alters no answer), so
every green run registers a new model version and deploys it blue/green on the local target. Every
``--kill-every``-th run gets SIGKILL to its process group (pytest and its endpoint-test child; not the
deployments, which outlive pytest by design) at a random moment: kill k of n at a share of a green run's
length drawn (seeded) from the k-th of n equal slices of 3%..97%, so the kills spread over start-up, the
flows, registration and deployment; a kill's run that ends first is run again. Then it
checks (``soak_checks.py``) the store, the registry and the deployments, runs the suite once more with
the faults off in replay mode (and released), runs it once on a fresh copy of the project and a fresh
store (the reference, never interrupted), and compares their verdicts. Exit status 1 on any
inconsistency, any difference, or a run that ended other than by itself or by its kill. Every
deployment and leftover server it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's package; the LLM tests' fault endpoint, by path

from fault_endpoint import FAULTS, FaultEndpoint  # noqa: E402
from soak_checks import (  # noqa: E402
    Check,
    check_deployments,
    check_registry,
    check_store,
    compare_verdicts,
    leftover_servers,
    registered,
)
from soak_project import set_revision, write_project  # noqa: E402

DUMMY_KEY = "soak-dummy-key"
FIRST_KILL_GUESS = 15.0  # seconds: a green run's length, before any run was green
KILL_TRIES = 3  # runs of a kill's turn that end before their kill moment, at most
SLOW_SECONDS = 3.0  # a "slow" fault answers this late: past the suite's 1 s timeout (pytest.ini)


@dataclass
class SuiteRun:
    """One pytest run: how long, how it ended, what the suite's endpoint saw meanwhile."""

    name: str
    seconds: float
    code: int | None  # None: killed
    killed_at: float | None
    requests: int
    faults: Counter[str]
    log: Path

    def lines(self) -> list[str]:
        return [line.strip() for line in self.log.read_text(errors="replace").splitlines() if line.strip()]

    def outcome(self) -> str:
        found = [line for line in self.lines() if re.search(r"\b(passed|failed|error)\b.* in [\d.]+s", line)]
        return found[-1] if found else "(last line: " + (self.lines() or ["none"])[-1][:40] + ")"

    def release(self) -> str:
        """The release's and the deployment's result in a few words."""
        text = "\n".join(self.lines())
        version = re.search(r"as (\S+ v\d+) \((new|reused)\)", text)
        deployed = re.search(r"promptflow deploy: .*?deployment (\w+): ([^;(]+)", text)
        failed = re.search(r"promptflow release: FAILED[^\n]*", text)
        words = [f"{version.group(1)} {version.group(2)}" if version else "",
                 f"{deployed.group(1)} {deployed.group(2).strip()}" if deployed else "",
                 failed.group(0) if failed else ""]
        return "; ".join(w for w in words if w) or "-"

    def row(self) -> str:
        ended = f"KILLED at {self.killed_at:.1f} s" if self.killed_at is not None else f"exit {self.code}"
        faults = ",".join(f"{kind}:{count}" for kind, count in sorted(self.faults.items())) or "-"
        return (f"{self.name:>9} {self.seconds:7.1f} s  {ended:<17} {self.requests:4d} req  faults {faults:<44} "
                f"{self.outcome()[:40]:<40}  {self.release()}")


def run_suite(project: Path, env: dict[str, str], name: str, endpoint: FaultEndpoint, mode: str, release: bool,
              kill_after: float | None, timeout: float) -> SuiteRun:
    """``pytest evals`` in ``project``; SIGKILL to its process group after ``kill_after`` seconds if given."""
    command = [sys.executable, "-m", "pytest", "evals", "-q", "-p", "no:cacheprovider", f"--promptflow-llm={mode}",
               f"--promptflow-report=reports/{name}", *(["--promptflow-release"] if release else [])]
    log = project / f"{name}.log"
    seen = len(endpoint.requests)
    start = time.perf_counter()
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = process.wait(timeout=kill_after if kill_after is not None else timeout)
            killed_at = None
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code, killed_at = None, time.perf_counter() - start
            if kill_after is None:
                output.write(f"\nsoak: no end within {timeout:g} s: killed\n".encode())
                code = -signal.SIGKILL
        except BaseException:  # Ctrl-C: the run goes too, before its deployments are stopped
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    faults = Counter(r.fault for r in endpoint.requests[seen:] if r.fault)
    return SuiteRun(name, time.perf_counter() - start, code, killed_at, len(endpoint.requests) - seen, faults, log)


def killed_run(project: Path, flaky: FaultEndpoint, name: str, rng: random.Random, runs: list[SuiteRun],
               slice_: tuple[int, int], timeout: float) -> None:
    """A run killed at a random moment: a share of a green run's length (green runs release and deploy)
    drawn from slice ``k`` of ``n`` equal slices of 3%..97%, so the kills spread over start-up, the flows,
    registration and deployment. A run that ends before its moment (its items failed early, or it ran
    faster) is run again, with a new revision, at most ``KILL_TRIES`` times; each is appended to ``runs``."""
    k, n = slice_
    share = rng.uniform(0.03 + 0.94 * k / n, 0.03 + 0.94 * (k + 1) / n)
    green = [run.seconds for run in runs if run.code == 0][-3:]
    length = statistics.median(green) if green else FIRST_KILL_GUESS
    for attempt in range(KILL_TRIES):
        set_revision(project, len(runs) + 1)
        runs.append(run_suite(project, environment(flaky), name + "+" * attempt, flaky, "record", True,
                              max(1.0, share * length), timeout))
        print(runs[-1].row() + ("  (ended before its kill: again)" if runs[-1].killed_at is None else ""), flush=True)
        if runs[-1].killed_at is not None:
            return
        if runs[-1].code == 0:
            length = runs[-1].seconds


def run_problems(run: SuiteRun) -> list[str]:
    """A run not killed must end as pytest ends (0, or 1 for a failed item or release); a release that
    fails while every item passed means the state left by a kill got in its way."""
    if run.killed_at is not None:
        return []
    if run.code not in (0, 1):
        return [f"run {run.name} ended with exit {run.code}: {run.outcome()} (log {run.log})"]
    if run.code == 1 and "failed" not in run.outcome() and "error" not in run.outcome():
        return [f"run {run.name}: every item passed, the release failed: {run.release()} (log {run.log})"]
    return []


def environment(llm: FaultEndpoint) -> dict[str, str]:
    """The suite reaches ``llm`` as it would reach Azure OpenAI; this checkout's package comes first."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, AOAI_API_KEY=DUMMY_KEY, AOAI_API_BASE=llm.url, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def consistency(project: Path) -> tuple[Check, Check, Check]:
    return (check_store(project / ".promptflow-llm"), check_registry(project),
            check_deployments(project / ".promptflow-deploy", registered(project)))


def stop_everything(project: Path) -> None:
    """Every endpoint the runs deployed, then any server from the project that no state names (by pid)."""
    from pytest_promptflow.deploy.local import LocalTarget

    state_dir = project / ".promptflow-deploy"
    target = LocalTarget(state_dir)
    for endpoint in target.endpoints():
        try:
            target.stop(endpoint)
        except Exception as error:  # a state a kill tore: the servers are still ended below
            print(f"soak: stopping endpoint {endpoint}: {error}")
    for pid, _ in leftover_servers(state_dir.resolve(), ()):
        try:
            os.killpg(pid, signal.SIGKILL)  # each was started in a session of its own, with its children
        except ProcessLookupError:
            pass  # gone meanwhile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="suite runs against the flaky endpoint (default 20)")
    parser.add_argument("--kill-every", type=int, default=5, help="SIGKILL every Nth run (default 5)")
    parser.add_argument("--seed", type=int, default=13, help="the faults' and the kill moments' seed (default 13)")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of requests that fail (default 0.3)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take before it counts as hung")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (projects, logs, reports)")
    args = parser.parse_args()

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="pf-soak-"))
    problems: list[str] = []
    flaky = FaultEndpoint(random_rate=args.fault_rate, seed=args.seed, random_faults=FAULTS, slow_seconds=SLOW_SECONDS)
    try:
        with flaky, FaultEndpoint() as clean:
            write_project(workdir / "project", clean.url)
            write_project(workdir / "reference", clean.url)
            print(f"soak: {args.runs} runs, SIGKILL in every {args.kill_every}th, {args.fault_rate:.0%} faults "
                  f"({', '.join(FAULTS)}), seed {args.seed}; in {workdir}\n", flush=True)
            runs = soak(workdir / "project", flaky, args, problems)
            flaky.random_rate = 0.0  # the clean runs: no faults
            problems += clean_runs(workdir, flaky, args)
            summary(runs, args.runs // args.kill_every, problems, time.perf_counter() - started)
    except Exception as error:
        problems.append(f"the soak itself failed: {type(error).__name__}: {error}")
        print(f"\nsoak: FAILED: {problems[-1]}")
        args.keep = True
    finally:
        for folder in (workdir / "project", workdir / "reference"):
            if folder.is_dir():
                stop_everything(folder)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


def soak(project: Path, flaky: FaultEndpoint, args: argparse.Namespace, problems: list[str]) -> list[SuiteRun]:
    """The runs against the flaky endpoint, each with a new revision of the flow, every Nth killed; then
    the consistency checks (their problems and those of the runs added to ``problems``)."""
    rng = random.Random(args.seed)
    runs: list[SuiteRun] = []
    for number in range(1, args.runs + 1):
        if number % args.kill_every == 0:
            slice_ = (number // args.kill_every - 1, args.runs // args.kill_every)
            killed_run(project, flaky, f"run-{number:02d}", rng, runs, slice_, args.timeout)
        else:
            set_revision(project, len(runs) + 1)
            runs.append(run_suite(project, environment(flaky), f"run-{number:02d}", flaky, "record", True, None,
                                  args.timeout))
            print(runs[-1].row(), flush=True)
    problems += [problem for run in runs for problem in run_problems(run)]
    print("\nafter the runs:")
    store, registry, deployments = consistency(project)
    if runs[-1].killed_at is not None:  # what that kill left, the final run's release must end
        deployments.name += " (right after a kill: counted after the final run)"
    for check in (store, registry, deployments):
        print("\n".join(check.lines()), flush=True)
    problems += store.problems + registry.problems + (deployments.problems if runs[-1].killed_at is None else [])
    return runs


def clean_runs(workdir: Path, endpoint: FaultEndpoint, args: argparse.Namespace) -> list[str]:
    """The final run (replayed from the soaked store, released) and the reference (a fresh copy of the
    project and store, never interrupted); their verdicts compared, the deployments checked again."""
    project, reference = workdir / "project", workdir / "reference"
    final = run_suite(project, environment(endpoint), "final", endpoint, "replay", True, None, args.timeout)
    ref = run_suite(reference, environment(endpoint), "reference", endpoint, "record", False, None, args.timeout)
    print("\nclean runs (no faults):")
    problems = []
    for run in (final, ref):
        print(run.row())
        problems += run_problems(run)
    if final.requests:
        problems.append(f"the final run replayed from the store but sent {final.requests} requests")
    verdict, table = compare_verdicts(reference / "reports/reference/report.json",
                                      project / "reports/final/report.json")
    after = check_deployments(project / ".promptflow-deploy", registered(project))
    print("\n".join([*verdict.lines(), *table, *after.lines()]))
    return problems + verdict.problems + after.problems


def summary(runs: list[SuiteRun], turns: int, problems: list[str], seconds: float) -> None:
    faults = Counter(fault for run in runs for fault in run.faults.elements())
    kills = [f"{run.name} at {run.killed_at:.1f} s" for run in runs if run.killed_at is not None]
    again = sum(1 for run in runs if run.name.endswith("+"))
    print(f"\nsummary: {len(runs)} runs{f' ({again} a kill run again)' if again else ''}, "
          f"{sum(1 for run in runs if run.code == 0)} green; {len(kills)} of {turns} kills landed: "
          f"{', '.join(kills) or '-'}")
    print(f"  {sum(run.requests for run in runs)} requests to the flaky endpoint, {sum(faults.values())} faults "
          f"({', '.join(f'{kind} {count}' for kind, count in sorted(faults.items()))}); {seconds:.0f} s in all")
    print("result: " + ("consistent, same verdicts" if not problems else f"{len(problems)} PROBLEM(S)"))
    for problem in problems:
        print(f"  - {problem}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; deployments stopped")
