"""The LLM answer store, measured at the model: a second identical run of the suite makes no requests.

One embedded model server (the plugin's own, started here through ``EmbeddedModel``) answers two
runs of ``pytest <suite> -q -p no:cacheprovider --promptflow-llm=cache`` in subprocesses, both with
the same fresh, temporary answer store. The suite reaches the server through the environment
(``AOAI_API_KEY`` = a dummy key, ``AOAI_API_BASE`` = the server's address), the way it would reach
Azure OpenAI, so neither pytest run starts a model of its own and every model request of both
runs is counted by the server itself (``GET /stats``), not by the plugin.

    source /work/venv/bin/activate
    python benchmarks/llm_cache.py                                  # the whole evals/ suite
    python benchmarks/llm_cache.py --suite evals/test_flex_and_prompty.py   # one file, quicker

For each run it prints the wall time (the whole pytest process: start-up, promptflow import,
collection, flows, evaluators), the model requests counted at the server, and pytest's outcome
line; then the ratio of the two times. Goals: the second run makes 0 requests and is at least
10x faster. Exit status 1 if the second run made any request (or a run did not finish), else 0.

The server is stopped at the end, on failure and on Ctrl-C; it also watches this script's pid
and exits on its own if the script is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DUMMY_KEY = "benchmark-dummy-key"
SPEEDUP_GOAL = 10.0

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, whatever HTTP_PROXY says


def model_requests(address: str) -> int:
    """Model requests the server has served so far (chat and completions)."""
    with _direct.open(f"{address}/stats", timeout=10) as response:
        return sum(json.load(response).values())


def run_suite(suite: str, address: str, store: Path, log: Path) -> tuple[float, int, str, int]:
    """One pytest run against the server: seconds, model requests it made, outcome line, exit code."""
    env = dict(os.environ, AOAI_API_KEY=DUMMY_KEY, AOAI_API_BASE=address)
    command = [sys.executable, "-m", "pytest", suite, "-q", "-p", "no:cacheprovider",
               "--promptflow-llm=cache", f"--promptflow-llm-store={store}"]
    before = model_requests(address)
    start = time.perf_counter()
    with log.open("wb") as output:
        code = subprocess.run(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output,
                              stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - start
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return seconds, model_requests(address) - before, (lines[-1] if lines else "(no output)"), code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="evals/", help="what pytest runs, relative to the repo (default evals/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (store, logs)")
    args = parser.parse_args()

    from pytest_promptflow.llm.embedded import EmbeddedModel

    workdir = Path(tempfile.mkdtemp(prefix="pf-llm-cache-"))
    store = workdir / "store"
    model = EmbeddedModel(workdir / "model", owner_pid=os.getpid())
    try:
        address = model.address()
        print(f"model server {address} (started by this script); store {store} (empty); "
              f"pytest {args.suite} -q --promptflow-llm=cache\n", flush=True)
        results = []
        for name in ("first", "second"):
            log = workdir / f"{name}.log"
            seconds, requests, outcome, code = run_suite(args.suite, address, store, log)
            results.append((seconds, requests, code))
            answers = sum(1 for _ in store.rglob("*.json")) if store.is_dir() else 0
            print(f"{name + ' run':<11}{seconds:9.2f} s  {requests:5d} model requests   "
                  f"pytest exit {code}: {outcome}   (store: {answers} answers)", flush=True)
            if code not in (0, 1):  # 0 passed, 1 some test failed; anything else: the run did not happen
                print(f"  pytest did not finish the run; its output: {log}")
                args.keep = True
                return 1
        (first, first_requests, _), (second, second_requests, _) = results
        ratio = first / second
        print(f"\nspeed-up first/second: {ratio:.1f}x")
        print(f"goal: second run makes 0 model requests: {'met' if second_requests == 0 else 'NOT met'} "
              f"({second_requests})")
        print(f"goal: second run >= {SPEEDUP_GOAL:g}x faster: {'met' if ratio >= SPEEDUP_GOAL else 'NOT met'} "
              f"({ratio:.1f}x)")
        if first_requests == 0:
            print("note: the first run made no model requests either; the suite calls no model")
        return 1 if second_requests else 0
    finally:
        model.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; the model server is stopped")
