"""Scale: one pure-Python flow over many rows x 4 cells, through every way the plugin can run it, and
through promptflow's batch engine, with the rows/s, the peak memory and the report files of each.

The flow is ``benchmarks/flows/word_stats`` (a DAG flow with one python node, ``stats``); its node input
``stats.inputs.top_k`` is overridden to 3 and 5, over two generated datasets (``short``: 8 to 40 words a row,
``long``: 40 to 120), so 4 cells of ``--rows`` rows each. A generated suite (one marker test, the error rate
asserted 0) runs in a temporary project, in a subprocess per mode:

* ``threads``: ``pytest --promptflow-concurrency 4`` (the plugin's in-process engine);
* ``xdist``: the same with ``-n 2``;
* ``ray1``, ``ray2``: ``--promptflow-backend ray --promptflow-ray-address ADDR`` on a local Ray cluster of
  1 node (2 CPUs) or 2 nodes (1 CPU each) that the script starts on 127.0.0.1; only when the plugin has
  that option, else the mode prints ``not available``;
* ``pf``: ``PFClient().run`` of the very same flow (one folder copy per ``top_k``, as ``pf.run`` has no
  node-input overrides) on the first ``--pf-rows`` rows of each dataset, ``PF_WORKER_COUNT=4``. The batch
  engine is 15-20x slower per row, so it runs a subset and the comparison is in rows/s.

Seconds are wall time: the whole pytest process (start-up, imports and writing the reports included) for
the plugin's modes; for ``pf``, ``PFClient()`` and the 4 ``pf.run`` calls (its import outside the clock).
Peak memory is the largest sum of the RSS of the process tree (pytest and its xdist workers, the batch
engine and its worker processes, the Ray cluster's processes), sampled every 0.2 s with psutil.
Report files: report.json, the CSV files (rows.csv, metrics.csv, experiments.csv) and report.html, with
the HTML's load time in headless Chromium (playwright, ``/usr/bin/chromium``; the column is skipped
without them).

promptflow state goes to a temporary ``PF_HOME_DIRECTORY`` (never ``~/.promptflow``) with telemetry off and
``trace.destination: none`` (no background service is started; if anything it flatters the batch engine).

    python benchmarks/scale.py                              # 100,000 rows x 4 cells; all modes
    nice -n 10 python benchmarks/scale.py --rows 20000 --pf-rows 2000 --modes threads,xdist,pf
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FLOW = HERE / "flows" / "word_stats"
OVERRIDE_KEY = "nodes.stats.inputs.top_k"
OVERRIDE_VALUES = (3, 5)
DATASETS = {"short": (8, 40), "long": (40, 120)}  # words per row
CONCURRENCY = 4
MODES = ("threads", "xdist", "ray1", "ray2", "pf")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPORTS = "reports"
CSV_FILES = ("rows.csv", "metrics.csv", "experiments.csv")
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega river stone cloud lamp orbit quartz maple ember").split()

SUITE = f'''import pytest


@pytest.mark.promptflow(flow="flows/word_stats", data=["data/short.jsonl", "data/long.jsonl"],
                        overrides={{"{OVERRIDE_KEY}": {list(OVERRIDE_VALUES)!r}}})
def test_scale(flow_run):
    assert flow_run.metrics["error_rate"] == 0
'''


# --- the project -------------------------------------------------------------------------------------


def make_rows(count: int, words: tuple[int, int], seed: int) -> list[dict[str, Any]]:
    """Deterministic texts of mixed case and punctuation, ``words`` (low, high) words each."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        parts = [rng.choice(WORDS).capitalize() if rng.random() < 0.2 else rng.choice(WORDS)
                 for _ in range(rng.randint(*words))]
        rows.append({"id": i, "text": " ".join(parts) + rng.choice((".", "!", "?"))})
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def make_project(root: Path, rows: int, pf_rows: int) -> Path:
    """A pytest project: the flow, the two datasets (and their first ``pf_rows`` rows for the batch engine)."""
    project = root / "project"
    shutil.copytree(FLOW, project / "flows" / "word_stats", ignore=shutil.ignore_patterns("__pycache__"))
    for seed, (name, words) in enumerate(DATASETS.items()):
        data = make_rows(rows, words, seed)
        write_jsonl(data, project / "data" / f"{name}.jsonl")
        write_jsonl(data[:pf_rows], root / "pf_data" / f"{name}.jsonl")
    (project / "pytest.ini").write_text("[pytest]\npromptflow_progress = false\n", encoding="utf-8")
    (project / "test_scale.py").write_text(SUITE, encoding="utf-8")
    return project


# --- measuring a process tree --------------------------------------------------------------------------


class PeakMemory:
    """The largest RSS sum of a process, its descendants and ``extra()`` processes, sampled in a thread."""

    def __init__(self, pid: int, extra: Callable[[], list[Any]] = list, every: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.extra = extra
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.every)

    def _rss(self) -> int:
        import psutil

        try:
            processes = {self.root, *self.root.children(recursive=True), *self.extra()}
        except psutil.Error:
            return 0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total


def run_measured(command: list[str], cwd: Path, env: dict[str, str],
                 extra: Callable[[], list[Any]] = list) -> tuple[float, int, subprocess.CompletedProcess]:
    """(wall seconds, peak RSS bytes, the finished process) of ``command``."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        with PeakMemory(process.pid, extra) as memory:
            process.wait()
        seconds = time.perf_counter() - start
        out.seek(0)
        output = out.read()
    return seconds, memory.peak, subprocess.CompletedProcess(command, process.returncode, output, "")


# --- the modes -------------------------------------------------------------------------------------------


@dataclass
class Result:
    mode: str
    rows: int = 0
    seconds: float = 0.0
    peak_rss: int = 0
    files: dict[str, int] = field(default_factory=dict)  # report.json, csv, html, the whole folder: bytes
    html_load: float | None = None
    note: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def pytest_env() -> dict[str, str]:
    """This checkout first on the path, promptflow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PF_LOGGING_LEVEL", "WARNING")
    return env


def has_option(project: Path, option: str) -> bool:
    """Whether this checkout's plugin knows ``option`` (``pytest --help`` in the project lists it)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=project,
                            env=pytest_env(), capture_output=True, text=True, check=False, timeout=300)
    return option in result.stdout


def run_suite(mode: str, project: Path, rows: int, extra_args: list[str],
              extra: Callable[[], list[Any]] = list) -> Result:
    """The generated suite in a subprocess; its reports checked to hold 4 cells of ``rows`` rows."""
    reports = project / REPORTS
    shutil.rmtree(reports, ignore_errors=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--promptflow-report", REPORTS,
               "--promptflow-concurrency", str(CONCURRENCY), *extra_args]
    seconds, peak, done = run_measured(command, project, pytest_env(), extra)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        return Result(mode, note=f"pytest exit {done.returncode}:\n{tail}")
    document = json.loads((reports / "report.json").read_text(encoding="utf-8"))
    cells = [cell for flow in document["flows"] for cell in flow["cells"]]
    kept = [int(cell["metrics"]["rows"]) for cell in cells]
    assert len(cells) == 4 and kept == [rows] * 4, f"{mode}: cells {[c['cell'] for c in cells]}, rows {kept}"
    files = {"report.json": (reports / "report.json").stat().st_size,
             "csv": sum((reports / name).stat().st_size for name in CSV_FILES),
             "html": (reports / "report.html").stat().st_size,
             "folder": sum(path.stat().st_size for path in reports.rglob("*") if path.is_file())}
    return Result(mode, 4 * rows, seconds, peak, files, html_load_seconds(reports / "report.html"))


def html_load_seconds(page: Path) -> float | None:
    """Seconds until the page's ``load`` event in headless Chromium; None without playwright or Chromium."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not CHROMIUM.exists():
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            start = time.perf_counter()
            tab.goto(page.as_uri(), wait_until="load", timeout=600_000)
            return time.perf_counter() - start
        finally:
            browser.close()


# --- Ray ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RayCluster:
    """A local Ray cluster of ``nodes`` nodes on 127.0.0.1 sharing 2 CPUs, each ``ray start`` in a process
    group of its own; stopped by those groups' processes (never ``ray stop``: it stops every cluster of the
    user). Its nodes import this checkout; their HOME is a temporary folder (promptflow writes there)."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.groups: set[int] = set()
        (self.temp / "home").mkdir()
        self.env = {**pytest_env(), "HOME": str(self.temp / "home"), "RAY_USAGE_STATS_ENABLED": "0"}

    def __enter__(self) -> RayCluster:
        try:
            self._start(["--head", "--port", str(self.port), "--include-dashboard=false",
                         "--dashboard-port", str(free_port())])
            for _ in range(self.nodes - 1):
                self._start(["--address", self.address])
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, args: list[str]) -> None:
        common = ["--num-cpus", str(2 // self.nodes), "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                  "--temp-dir", str(self.temp / "ray")]
        process = subprocess.Popen([self.ray, "start", *args, *common], env=self.env, start_new_session=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.groups.add(process.pid)
        output, _ = process.communicate(timeout=180)
        if process.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)}: exit {process.returncode}: {output[-500:]}")

    def processes(self) -> list[Any]:
        """The cluster's processes: those of its ``ray start`` groups and their children (Ray's workers)."""
        import psutil

        found: set[Any] = set()
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) in self.groups:
                    found.update([process, *process.children(recursive=True)])
            except (ProcessLookupError, psutil.Error):
                continue
        return list(found)

    def __exit__(self, *exc: object) -> None:
        import psutil

        processes = self.processes()
        for process in processes:
            try:
                process.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(processes, timeout=15)
        shutil.rmtree(self.temp, ignore_errors=True)


def run_ray(mode: str, project: Path, rows: int) -> Result:
    with RayCluster(nodes=int(mode[-1])) as cluster:
        return run_suite(mode, project, rows, ["--promptflow-backend", "ray", "--promptflow-ray-address",
                                               cluster.address], extra=cluster.processes)


# --- promptflow's batch engine ---------------------------------------------------------------------


def flow_copy(folder: Path, top_k: int) -> Path:
    """The flow with ``stats.inputs.top_k`` written in: ``pf.run`` has no node-input overrides."""
    from ruamel.yaml import YAML

    target = folder / f"word_stats_top_k_{top_k}"
    shutil.copytree(FLOW, target, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
    yaml = YAML()
    dag_file = target / "flow.dag.yaml"
    dag = yaml.load(dag_file.read_text(encoding="utf-8"))
    next(node for node in dag["nodes"] if node["name"] == "stats")["inputs"]["top_k"] = top_k
    with dag_file.open("w", encoding="utf-8") as stream:
        yaml.dump(dag, stream)
    return target


def pf_child(root: Path) -> int:
    """In the batch engine's subprocess: the 4 cells through ``PFClient().run``; prints seconds as JSON."""
    from promptflow.client import PFClient  # outside the clock

    flows = [root / f"word_stats_top_k_{top_k}" for top_k in OVERRIDE_VALUES]
    start = time.perf_counter()
    pf = PFClient()
    runs = [pf.run(flow=str(flow), data=str(root / "pf_data" / f"{name}.jsonl"),
                   column_mapping={"text": "${data.text}"}, stream=False)
            for flow in flows for name in DATASETS]
    seconds = time.perf_counter() - start
    rows = 0
    for run in runs:
        run = pf.runs.get(run.name)
        assert run.status == "Completed", f"batch run {run.name} ended {run.status}"
        rows += len(pf.get_details(run, all_results=True))
    print(json.dumps({"seconds": seconds, "rows": rows}))
    return 0


def run_pf(root: Path, pf_rows: int) -> Result:
    home = root / "pf_home"
    home.mkdir(exist_ok=True)
    (home / "pf.yaml").write_text("telemetry:\n  enabled: false\ntrace:\n  destination: none\n", encoding="utf-8")
    for top_k in OVERRIDE_VALUES:
        flow_copy(root, top_k)
    env = {**pytest_env(), "PF_HOME_DIRECTORY": str(home), "PF_WORKER_COUNT": str(CONCURRENCY)}
    _, peak, done = run_measured([sys.executable, __file__, "--pf-child", str(root)], root, env)
    if done.returncode != 0:
        return Result("pf", note=f"exit {done.returncode}:\n" + "\n".join(done.stdout.splitlines()[-15:]))
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 4 * pf_rows, figures
    return Result("pf", figures["rows"], figures["seconds"], peak, note="batch engine, --pf-rows per cell")


# --- the table ------------------------------------------------------------------------------------


LABELS = {"threads": "pytest, threads (concurrency 4)", "xdist": "pytest -n 2 (xdist)",
          "ray1": "pytest, Ray 1 node (2 CPUs)", "ray2": "pytest, Ray 2 nodes (1 CPU each)",
          "pf": "promptflow batch engine (pf.run)"}


def print_table(results: list[Result]) -> None:
    pf = next((r for r in results if r.mode == "pf" and r.rows), None)
    print(f"\n{'way':<36}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'x pf':>8}{'peak MB':>9}"
          f"{'json MB':>9}{'csv MB':>8}{'html MB':>9}{'html load s':>13}{'folder MB':>11}")
    for r in results:
        if not r.rows:
            print(f"{LABELS[r.mode]:<36}{r.note.splitlines()[0] if r.note else 'not run'}")
            continue
        ratio = f"{r.rows_per_second / pf.rows_per_second:.1f}" if pf else "-"
        files = [f"{r.files[k] / 1e6:.1f}" if k in r.files else "-" for k in ("report.json", "csv", "html", "folder")]
        load = f"{r.html_load:.2f}" if r.html_load is not None else "-"
        print(f"{LABELS[r.mode]:<36}{r.rows:>9,}{r.seconds:>10.1f}{r.rows_per_second:>10,.0f}{ratio:>8}"
              f"{r.peak_rss / 1e6:>9.0f}{files[0]:>9}{files[1]:>8}{files[2]:>9}{load:>13}{files[3]:>11}")
    for r in results:
        if r.note and not r.rows and "\n" in r.note:
            print(f"\n{r.mode}: {r.note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows per dataset, so per cell (default 100,000)")
    parser.add_argument("--pf-rows", type=int, default=2_000,
                        help="rows per cell for promptflow's batch engine (default 2,000)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (project, reports, runs)")
    parser.add_argument("--pf-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pf_child:
        return pf_child(Path(args.pf_child))
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")

    root = Path(tempfile.mkdtemp(prefix="pf-scale-"))
    try:
        project = make_project(root, args.rows, min(args.pf_rows, args.rows))
        print(f"flow {FLOW.relative_to(REPO)}: 4 cells ({OVERRIDE_KEY} in {OVERRIDE_VALUES} x datasets "
              f"{', '.join(DATASETS)}), {args.rows:,} rows each; promptflow's batch engine on "
              f"{min(args.pf_rows, args.rows):,} rows each", flush=True)
        ray = any(m.startswith("ray") for m in modes) and has_option(project, "--promptflow-ray-address")
        results = []
        for mode in modes:
            print(f"  {mode} ...", flush=True)
            if mode == "pf":
                result = run_pf(root, min(args.pf_rows, args.rows))
            elif mode.startswith("ray"):
                result = run_ray(mode, project, args.rows) if ray else Result(mode, note="not available "
                                                                               "(no --promptflow-ray-address)")
            else:
                result = run_suite(mode, project, args.rows, ["-n", "2"] if mode == "xdist" else [])
            results.append(result)
        print_table(results)
        print("\nrows/s: rows of all 4 cells / wall seconds; the plugin's include pytest's start-up and the "
              "reports, pf's only its runs.\n'x pf' is rows/s over the batch engine's rows/s (it ran fewer "
              "rows: --pf-rows).\nfolder: the report folder, its runs/<run id>/report.json (the history's copy) "
              "included.")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":  # required: the batch engine starts worker processes
    sys.exit(main())
