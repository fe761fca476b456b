"""A warm rerun against a cold run: the same suite, the second time with every LLM answer in the store.

    python benchmarks/warm_rerun.py                          # evals/: one cold run, then 3 warm ones (~2.5 min)
    python benchmarks/warm_rerun.py --store .promptflow-llm  # warm runs only, on a copy of a filled store
    python benchmarks/warm_rerun.py --suite evals/test_qa.py --runs 5
    python benchmarks/warm_rerun.py --workers 2              # the same under pytest-xdist, -n 2 (cells once)

Each run is ``pytest <suite> -q -p no:cacheprovider`` in a subprocess of this tree (``PYTHONPATH`` is its root),
with ``--promptflow-llm-store`` a temporary folder and the report in another: the cold run starts from an empty
store (the plugin's embedded model answers; ``--promptflow-llm=cache``, the default), the warm ones replay it
(``--promptflow-llm=replay``: a call missing from the store fails its item instead of reaching a model). Also timed:
pytest's own start (``pytest --collect-only`` of an empty folder, the plugin loaded but unused), the floor a warm
rerun should come close to. Printed: wall seconds and CPU seconds (user + system of pytest and the processes it
waited for, steadier than wall time on a shared machine) per run; the warm figure is the median; the ratio cold /
warm; the goal is 10x.
Nothing is written outside the temporary folders (no file in your home, none in the project).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL = 10.0


def timed(command: list[str], log: Path, cwd: Path = ROOT) -> tuple[float, float, int, str]:
    """One subprocess: wall seconds, its CPU seconds (user + system), exit code, the last line it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("wb") as output:
        code = subprocess.run(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                              stderr=subprocess.STDOUT, check=False).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return wall, cpu, code, lines[-1] if lines else ""


def suite_command(suite: str, store: Path, report: Path, mode: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider", f"--promptflow-llm={mode}",
            f"--promptflow-llm-store={store}", f"--promptflow-report={report}",
            *(["-n", str(workers)] if workers else [])]


def show(label: str, wall: float, cpu: float, code: int, last: str) -> None:
    print(f"{label:<14} {wall:7.1f} s wall {cpu:7.1f} s CPU   exit {code}   {last}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="evals/", help="what pytest runs, relative to the project (evals/)")
    parser.add_argument("--runs", type=int, default=3, help="warm runs; their median is the warm figure (3)")
    parser.add_argument("--store", type=Path, help="a filled LLM store: copy it and skip the cold run")
    parser.add_argument("--workers", type=int, default=0, help="run every suite run with -n WORKERS (0: serial)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="warm-rerun-") as temp:
        work = Path(temp)
        store, empty = work / "store", work / "empty"
        empty.mkdir()
        start = timed([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                      work / "start.log", cwd=empty)
        show("pytest start", *start)
        cold = None
        if args.store is not None:
            shutil.copytree(args.store, store)
        else:
            cold = timed(suite_command(args.suite, store, work / "cold", "cache", args.workers), work / "cold.log")
            show("cold", *cold)
            if cold[2] not in (0, 1):
                print(f"the cold run did not finish; its output: {work / 'cold.log'}")
                return 1
        warm = [timed(suite_command(args.suite, store, work / f"warm{i}", "replay", args.workers),
                      work / f"warm{i}.log") for i in range(args.runs)]
        for i, run in enumerate(warm, 1):
            show(f"warm {i}", *run)
        wall, cpu = statistics.median(run[0] for run in warm), statistics.median(run[1] for run in warm)
        print(f"warm (median)  {wall:7.1f} s wall {cpu:7.1f} s CPU; pytest's own start {start[0]:.1f} s")
        if cold is not None:
            print(f"cold / warm: {cold[0] / wall:.1f}x wall, {cold[1] / cpu:.1f}x CPU (goal {GOAL:.0f}x)")
        return 0 if all(run[2] in (0, 1) for run in warm) else 1


if __name__ == "__main__":
    sys.exit(main())
