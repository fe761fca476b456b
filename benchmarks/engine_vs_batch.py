"""The plugin's in-process engine against promptflow's batch engine (``PFClient.run``), on equal work.

The same matrix runs through both: the pure-Python flow ``benchmarks/flows/text_stats`` (node
``normalize`` has two variants; node input ``stats.inputs.top_k`` is overridden to 3 or 5, so
4 cells), on 200 generated rows written to a temporary JSONL. Every cell's outputs from path B
are asserted equal, row by row, to path A's before any time is printed.

    source /work/venv/bin/activate
    python benchmarks/engine_vs_batch.py            # best of 3 per path
    python benchmarks/engine_vs_batch.py --repeat 5 --rows 200

What is timed:

* A (plugin): ``load_target`` + ``load_rows`` + ``matrix.expand`` + ``Engine(concurrency=4).run``
  for each of the 4 cells, which includes creating each cell's promptflow ``FlowExecutor``.
* B (batch engine): ``PFClient()`` + 4 x ``pf.run(..., stream=False)``. Reading the outputs back
  (``pf.get_details``) and writing the flow copies are outside the clock, so B's figure (and
  the ratio) is, if anything, flattering to the batch engine.

Not timed in either path: the Python import of promptflow (``promptflow.client``,
``promptflow.executor``); both are imported before any clock starts.

Isolation: ``PF_HOME_DIRECTORY`` points at a temporary directory before promptflow is imported,
so the run store, the service port file and logs never touch ``~/.promptflow``. Its ``pf.yaml``
turns promptflow's telemetry off (it is on by default and, offline, only adds network retries to
B; ``--telemetry`` keeps it on). ``pf.run`` starts tracing, which starts promptflow's background
service (``waitress-serve ... promptflow._cli._pf._service:get_app``, detached, on the first free
port from 23333) and leaves it running; the script stops it at the end with ``pf service stop``
and checks with ``ps`` and ``ss`` that no new service process or listener on 23333+ is left.
``--no-trace`` sets ``trace.destination: none`` for B, so no service is started at all.

Logging: ``PF_LOGGING_LEVEL=WARNING`` for both paths unless ``--verbose`` (promptflow's executor
logs several INFO lines per row to stdout, 16,000+ lines per repeat; it made no measurable
difference to either time here, it only buries the table).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FLOW = HERE / "flows" / "text_stats"
VARIANT_NODE = "normalize"
OVERRIDE_KEY = "nodes.stats.inputs.top_k"
OVERRIDE_VALUES = (3, 5)
CONCURRENCY = 4
SERVICE_PORTS = range(23333, 23433)  # promptflow's service takes the first free port from 23333

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega river stone cloud lamp orbit quartz maple ember").split()


def make_rows(count: int, seed: int = 1234) -> list[dict[str, Any]]:
    """Deterministic texts with mixed case, punctuation and uneven whitespace (the variants differ)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        parts = []
        for _ in range(rng.randint(8, 40)):
            word = rng.choice(WORDS)
            word = word.upper() if rng.random() < 0.15 else word.capitalize() if rng.random() < 0.2 else word
            parts.append(word + rng.choice(("", "", "", ",", ".", "!", "?", ";")))
            parts.append(rng.choice((" ", " ", " ", "  ", "\t", "\n")))
        rows.append({"id": i, "text": "".join(parts)})
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def flow_copy_with_override(workdir: Path, top_k: int) -> Path:
    """A copy of the flow folder with ``stats.inputs.top_k`` baked in.

    ``PFClient.run`` takes a variant (``${node.variant_id}``) but has no node-input overrides, so
    the only way to run the override axis through the batch engine is one flow folder per value.
    """
    from ruamel.yaml import YAML

    target = workdir / f"text_stats_top_k_{top_k}"
    shutil.copytree(FLOW, target, ignore=shutil.ignore_patterns("__pycache__", ".promptflow"))
    yaml = YAML()  # round trip: the copy differs from the original only in that value
    dag_file = target / "flow.dag.yaml"
    dag = yaml.load(dag_file.read_text(encoding="utf-8"))
    stats = next(node for node in dag["nodes"] if node["name"] == "stats")
    stats["inputs"]["top_k"] = top_k
    with dag_file.open("w", encoding="utf-8") as stream:
        yaml.dump(dag, stream)
    return target


# --- path A: the plugin's engine ------------------------------------------------------------------

def run_plugin(data_file: Path) -> tuple[float, float, dict[tuple[str, int], list[dict[str, Any]]]]:
    from pytest_promptflow.config import DatasetSpec, VariantsSpec
    from pytest_promptflow.datasets import load_rows
    from pytest_promptflow.engine import Engine
    from pytest_promptflow.flows import load_target
    from pytest_promptflow.matrix import expand

    start = time.perf_counter()
    target = load_target(FLOW, HERE)
    dataset = DatasetSpec(name="rows", source=data_file, mappings={"text": "${data.text}"})
    spec = VariantsSpec(strategy="matrix", nodes={VARIANT_NODE: "*"}, overrides={OVERRIDE_KEY: OVERRIDE_VALUES})
    cells = expand(target.name, spec, target.node_variants(), [dataset])
    rows = load_rows(dataset)
    engine = Engine(concurrency=CONCURRENCY)  # a fresh engine per repeat: it caches runs by cell
    runs = [engine.run(target, cell, rows, connections={}) for cell in cells]
    seconds = time.perf_counter() - start

    assert len(cells) == 4, [c.id for c in cells]
    outputs = {}
    for run in runs:
        failed = [r for r in run.rows if r.failed]
        assert not failed, f"{run.cell.id}: {failed[0].error_type}: {failed[0].error_message}"
        key = (dict(run.cell.variants)[VARIANT_NODE], dict(run.cell.overrides)[OVERRIDE_KEY])
        outputs[key] = [dict(r.outputs or {}) for r in run.rows]
    return seconds, sum(run.seconds for run in runs), outputs


# --- path B: promptflow's batch engine ------------------------------------------------------------

def run_batch(data_file: Path, flow_copies: dict[int, Path], variant_ids: tuple[str, ...]
              ) -> tuple[float, dict[tuple[str, int], list[dict[str, Any]]], float]:
    from promptflow.client import PFClient

    start = time.perf_counter()
    pf = PFClient()
    runs = {}
    for variant in variant_ids:
        for top_k, folder in flow_copies.items():
            runs[(variant, top_k)] = pf.run(
                flow=str(folder),
                data=str(data_file),
                variant=f"${{{VARIANT_NODE}.{variant}}}",
                column_mapping={"text": "${data.text}"},
                stream=False,
            )
    seconds = time.perf_counter() - start

    read_start = time.perf_counter()
    outputs = {}
    for key, run in runs.items():
        run = pf.runs.get(run.name)
        assert run.status == "Completed", f"batch run {run.name} ({key}) ended {run.status}"
        details = pf.get_details(run, all_results=True)  # default max_results is 100 rows
        outputs[key] = _details_outputs(details)
    return seconds, outputs, time.perf_counter() - read_start


def _details_outputs(details: Any) -> list[dict[str, Any]]:
    """``pf.get_details`` frame -> one outputs dict per row, in line-number order."""
    details = details.sort_values("inputs.line_number")
    columns = [c for c in details.columns if c.startswith("outputs.") and c != "outputs.line_number"]
    rows = []
    for record in details[columns].to_dict("records"):
        rows.append({c[len("outputs."):]: _plain(v) for c, v in record.items()})
    return rows


def _plain(value: Any) -> Any:
    """numpy scalars (from the pandas frame) as Python values, for an exact comparison."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def compare(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for key in a:
        assert len(a[key]) == len(b[key]), f"{key}: {len(a[key])} rows vs {len(b[key])}"
        for i, (row_a, row_b) in enumerate(zip(a[key], b[key], strict=True)):
            assert row_a == row_b, f"cell {key}, row {i}: plugin {row_a!r} != batch {row_b!r}"
    # the cells really differ, so the matrix is real work and not 4 copies of one run
    assert len({json.dumps(v, sort_keys=True) for v in a.values()}) == len(a), "cells gave identical outputs"


# --- the service the batch engine leaves behind -----------------------------------------------

def listening_service_ports() -> list[str]:
    """Lines of ``ss -ltnp`` for TCP listeners on promptflow's service ports."""
    try:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return []
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            port = fields[3].rsplit(":", 1)[-1]
            if port.isdigit() and int(port) in SERVICE_PORTS:
                found.append(line.strip())
    return found


SERVICE_MARKS = ("promptflow._cli._pf._service", "waitress-serve", "pf service start", "pfs start")


def service_processes() -> list[str]:
    """``ps`` lines of promptflow service processes (``pid args``)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False).stdout
    return [line.strip() for line in out.splitlines()[1:] if any(mark in line for mark in SERVICE_MARKS)]


def stop_service(before: tuple[set[str], set[str]]) -> None:
    """``pf service stop`` with our home (it reads the port from $PF_HOME_DIRECTORY/pfs/), then check.

    ``before`` is what was there before the benchmark (the machine may be shared): only new
    processes and listeners count as left by us.
    """
    def new() -> tuple[list[str], list[str]]:
        return ([p for p in service_processes() if p not in before[0]],
                [p for p in listening_service_ports() if p not in before[1]])

    procs, ports = new()
    print(f"\nleft by the batch engine: {len(procs)} service process(es), listening on "
          f"{', '.join(line.split()[3] for line in ports) or 'nothing'}")
    for line in procs:
        print(f"  {line[:160]}")
    result = subprocess.run([sys.executable, "-m", "promptflow._cli._pf.entry", "service", "stop"],
                            capture_output=True, text=True, check=False, timeout=120)
    message = (result.stdout.strip() or result.stderr.strip()).splitlines()
    print(f"`pf service stop` (exit {result.returncode}): {message[-1] if message else ''}")
    deadline = time.monotonic() + 15
    while any(new()) and time.monotonic() < deadline:
        time.sleep(0.5)
    procs, ports = new()
    print(f"after stop: {len(procs)} new promptflow service process(es), {len(ports)} new listener(s) on 23333+")
    for line in procs + ports:
        print(f"  LEFT: {line[:160]}")


# --- main -------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per path; the best is reported (default 3)")
    parser.add_argument("--rows", type=int, default=200, help="dataset rows (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (data, runs, logs)")
    parser.add_argument("--telemetry", action="store_true", help="leave promptflow's telemetry on (its default)")
    parser.add_argument("--verbose", action="store_true", help="keep promptflow's INFO logging (both paths)")
    parser.add_argument("--no-trace", action="store_true",
                        help="B without tracing (trace.destination: none), so no background service")
    args = parser.parse_args()

    before = set(service_processes()), set(listening_service_ports())
    workdir = Path(tempfile.mkdtemp(prefix="pf-bench-"))
    home = workdir / "pf_home"
    home.mkdir()
    config = "" if args.telemetry else "telemetry:\n  enabled: false\n"
    config += "trace:\n  destination: none\n" if args.no_trace else ""
    (home / "pf.yaml").write_text(config, encoding="utf-8")
    os.environ["PF_HOME_DIRECTORY"] = str(home)  # before promptflow is imported (it reads it at import)
    os.environ.setdefault("PF_WORKER_COUNT", str(CONCURRENCY))  # the batch engine's processes = our threads
    if not args.verbose:
        os.environ.setdefault("PF_LOGGING_LEVEL", "WARNING")
    if "promptflow" in sys.modules or any(m.startswith("promptflow.") for m in sys.modules):
        raise SystemExit("promptflow was imported before PF_HOME_DIRECTORY was set")

    # Imports outside the clock, for both paths.
    import promptflow.client  # noqa: F401  (path B)
    import promptflow.executor  # noqa: F401  (path A)
    from promptflow._sdk._constants import HOME_PROMPT_FLOW_DIR

    assert Path(HOME_PROMPT_FLOW_DIR) == home.resolve(), HOME_PROMPT_FLOW_DIR

    try:
        rows = make_rows(args.rows)
        data_file = write_jsonl(rows, workdir / "rows.jsonl")
        from pytest_promptflow.flows import load_target

        variant_ids = load_target(FLOW, HERE).node_variants()[VARIANT_NODE][1]
        flow_copies = {top_k: flow_copy_with_override(workdir, top_k) for top_k in OVERRIDE_VALUES}
        cells = len(variant_ids) * len(OVERRIDE_VALUES)
        print(f"flow {FLOW.relative_to(HERE.parent)}: {cells} cells ({VARIANT_NODE} in {variant_ids} x "
              f"{OVERRIDE_KEY} in {OVERRIDE_VALUES}), {len(rows)} rows each, concurrency {CONCURRENCY}; "
              f"best of {args.repeat}")
        print(f"promptflow home: {home} (telemetry {'on' if args.telemetry else 'off'}, "
              f"tracing {'off' if args.no_trace else 'on'})\n")

        times_a, times_b, reads_b = [], [], []
        outputs_a = outputs_b = None
        for i in range(args.repeat):
            seconds, rows_seconds, outputs_a = run_plugin(data_file)
            times_a.append(seconds)
            print(f"  A plugin engine, run {i + 1}: {seconds:8.3f} s  (rows {rows_seconds:.3f} s, "
                  f"setup incl. 4 executors {seconds - rows_seconds:.3f} s)", flush=True)
        for i in range(args.repeat):
            seconds, outputs_b, read = run_batch(data_file, flow_copies, variant_ids)
            times_b.append(seconds)
            reads_b.append(read)
            print(f"  B PFClient.run,  run {i + 1}: {seconds:8.3f} s  (+{read:.2f} s get_details, untimed)",
                  flush=True)
            compare(outputs_a, outputs_b)
        print("  outputs: B equals A, row by row, in all 4 cells\n")

        total_rows = cells * len(rows)
        best_a, best_b = min(times_a), min(times_b)
        print(f"{'path':<34}{'seconds':>10}{'rows/s':>12}")
        print(f"{'A  pytest_promptflow Engine':<34}{best_a:>10.3f}{total_rows / best_a:>12.0f}")
        print(f"{'B  promptflow PFClient.run':<34}{best_b:>10.3f}{total_rows / best_b:>12.0f}")
        ratio = best_b / best_a
        print(f"\nratio B/A: {ratio:.1f}x  (goal: >= 20x: {'met' if ratio >= 20 else 'NOT met'})")
    finally:
        stop_service(before)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":  # required: the batch engine starts worker processes
    sys.exit(main())
