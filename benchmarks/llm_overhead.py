"""The plugin's LLM path against a direct client: same server, same requests, same concurrency.

One embedded model server (the plugin's own, ``--parallel 4``, started here through
``EmbeddedModel``) answers both paths; it counts the requests it serves (``GET /stats``), so each
path is checked to have made exactly one request per row.

* A (plugin, cache off): the DAG flow ``flows/sentiment`` (default variant: few-shot prompt,
  ``max_tokens`` 10) over N rows, through ``Engine(concurrency=C).run`` with the connection
  resolved by ``PromptflowSession.connections`` (credentials from ``AOAI_API_KEY`` /
  ``AOAI_API_BASE``) and every call through the plugin's call layer in ``--promptflow-llm=live``
  mode: nothing is read from or written to a store. The clock covers the whole ``Engine.run``,
  including building promptflow's executor.
* B (direct): ``httpx2.Client`` (the HTTP client the OpenAI SDK uses) in a ``ThreadPoolExecutor``
  of C threads, POSTing the very request bodies A sends, in row order, to the same URL.

The bodies come from a first, untimed run of A in ``record`` mode into a temporary store, whose
files hold each request body exactly as sent; it also warms the server up. The rows are the 50 of
``evals/data/sentiment.jsonl`` and ``sentiment_hard.jsonl``, repeated to N.

    source /work/venv/bin/activate
    python benchmarks/llm_overhead.py                       # 96 rows, concurrency 4, 5 rounds
    python benchmarks/llm_overhead.py --rows 48 --repeat 3

Rounds alternate A and B (A first in odd rounds, B first in even ones), so drift in the machine's
load falls on both. Each run prints its time, rows/s, the requests the server counted, the
completion tokens (equal work: the same answers), and the CPU seconds of this process (the client
side: promptflow, the plugin, httpx2) and of the server. Then rows/s of each path (best and
median of the rounds) and the ratio A/B; the goal is A/B >= 0.9 on the best runs: the plugin's
layer is not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "sentiment"
DATA = (ROOT / "evals" / "data" / "sentiment.jsonl", ROOT / "evals" / "data" / "sentiment_hard.jsonl")
DUMMY_KEY = "benchmark-dummy-key"
GOAL = 0.9


def model_requests(address: str) -> int:
    """Model requests the server has served so far (chat and completions)."""
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"{address}/stats", timeout=10) as response:
        return sum(json.load(response).values())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_rows(count: int, path: Path) -> list[str]:
    """The sentiment texts, repeated to ``count`` rows, as a JSONL file; returns the texts."""
    texts = [json.loads(line)["text"] for file in DATA for line in file.read_text().splitlines() if line.strip()]
    texts = [texts[i % len(texts)] for i in range(count)]
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return texts


# --- path A: the plugin ---------------------------------------------------------------------------

def run_plugin(data_file: Path, concurrency: int, mode: str, store: Path) -> tuple[float, int]:
    """The flow over the rows through the plugin: seconds (the whole Engine.run), completion tokens.
    Every row must succeed."""
    from pytest_promptflow.config import DatasetSpec, VariantsSpec
    from pytest_promptflow.datasets import load_rows
    from pytest_promptflow.engine import Engine
    from pytest_promptflow.llm.settings import LLMSettings
    from pytest_promptflow.matrix import expand
    from pytest_promptflow.session import PromptflowSession

    session = PromptflowSession(ROOT, concurrency, None, llm=LLMSettings(mode=mode, store=store))
    try:
        target = session.target(FLOW, ROOT, None)
        dataset = DatasetSpec(name="rows", source=data_file, mappings={"text": "${data.text}"})
        (cell,) = expand(target.name, VariantsSpec(strategy="defaults", nodes={"classify": "*"}),
                         target.node_variants(), [dataset])
        rows = load_rows(dataset)
        connections = session.connections(target, [])
        engine = Engine(concurrency)  # a fresh one: an engine runs a cell once
        start = time.perf_counter()
        run = engine.run(target, cell, rows, connections)
        seconds = time.perf_counter() - start
    finally:
        session.close()  # deactivates the call layer, so B's requests pass straight through
    failed = [r for r in run.rows if r.failed]
    assert not failed, f"{len(failed)} rows failed, e.g. {failed[0].error_type}: {failed[0].error_message}"
    return seconds, int(run.metrics["tokens.completion"])


def recorded_requests(store: Path, texts: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(URL path and query, body) of the request A sent for each row, in row order, from the store."""
    entries = [json.loads(f.read_text(encoding="utf-8"))["request"] for f in store.rglob("*.json")]
    by_text = {}
    for text in set(texts):
        found = [e for e in entries if text in e["body"]["messages"][-1]["content"]]
        assert len(found) == 1, f"{len(found)} recorded requests end with the row {text!r}"
        by_text[text] = found[0]
    requests = []
    for text in texts:
        entry = by_text[text]
        path = f"/openai/deployments/{entry['model']}/{entry['kind']}?api-version={entry['api_version']}"
        requests.append((path, entry["body"]))
    return requests


# --- path B: a direct client ----------------------------------------------------------------------

def run_direct(address: str, requests: list[tuple[str, dict[str, Any]]], concurrency: int) -> tuple[float, int]:
    """The same bodies POSTed with C threads sharing one httpx2 client: seconds, completion tokens."""
    import httpx2

    headers = {"api-key": DUMMY_KEY, "content-type": "application/json"}

    with httpx2.Client(base_url=address, timeout=120, trust_env=False) as client:
        def send(request: tuple[str, dict[str, Any]]) -> int:
            response = client.post(request[0], content=json.dumps(request[1]).encode(), headers=headers)
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            tokens = sum(pool.map(send, requests))
        return time.perf_counter() - start, tokens


# --- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=96, help="rows per run (default 96)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight, both paths (default 4)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds of A and B (default 5)")
    args = parser.parse_args()

    os.environ.setdefault("PF_LOGGING_LEVEL", "WARNING")  # promptflow logs several INFO lines per row
    # promptflow builds an Azure Monitor exporter even with telemetry off; offline, its settings
    # fetch warns at exit that it cannot resolve settings.sdk.monitor.azure.com
    logging.getLogger("azure.monitor.opentelemetry.exporter._configuration").setLevel(logging.CRITICAL)
    from pytest_promptflow.flows import load_promptflow
    from pytest_promptflow.llm.embedded import EmbeddedModel

    load_promptflow()  # imported outside every clock
    import httpx2  # noqa: F401

    workdir = Path(tempfile.mkdtemp(prefix="pf-llm-overhead-"))
    model = EmbeddedModel(workdir / "model", owner_pid=os.getpid())
    try:
        address = model.address()
        os.environ.update(AOAI_API_KEY=DUMMY_KEY, AOAI_API_BASE=address)
        data_file = workdir / "rows.jsonl"
        texts = write_rows(args.rows, data_file)
        print(f"model server {address} (--parallel {model.parallel}); flow {FLOW.relative_to(ROOT)} "
              f"(classify=variant_0), {args.rows} rows ({len(set(texts))} distinct), "
              f"concurrency {args.concurrency}\n", flush=True)

        before = model_requests(address)
        seconds, _ = run_plugin(data_file, args.concurrency, "record", workdir / "store")
        requests = recorded_requests(workdir / "store", texts)
        print(f"  capture (A in record mode, untimed): {seconds:.2f} s, "
              f"{model_requests(address) - before} requests, {len(requests)} bodies for B", flush=True)

        server_pid = json.loads(model.record_path.read_text())["pid"]
        times: dict[str, list[float]] = {"A": [], "B": []}
        for round_ in range(args.repeat):
            for path in ("AB" if round_ % 2 == 0 else "BA"):
                before, cpu, server_cpu = model_requests(address), time.process_time(), cpu_seconds(server_pid)
                if path == "A":
                    seconds, tokens = run_plugin(data_file, args.concurrency, "live", workdir / "unused-store")
                else:
                    seconds, tokens = run_direct(address, requests, args.concurrency)
                cpu, server_cpu = time.process_time() - cpu, cpu_seconds(server_pid) - server_cpu
                made = model_requests(address) - before
                assert made == args.rows, f"path {path} made {made} model requests for {args.rows} rows"
                times[path].append(seconds)
                print(f"  round {round_ + 1} {path}: {seconds:6.2f} s  {args.rows / seconds:5.2f} rows/s  "
                      f"{made} requests  {tokens} completion tokens  CPU: client {cpu:4.2f} s, server "
                      f"{server_cpu:5.2f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
        assert not (workdir / "unused-store").exists(), "live mode wrote a store"

        print(f"\n{'path':<44}{'best rows/s':>12}{'median rows/s':>15}")
        rates = {}
        for path, label in (("A", "A  plugin: Engine + call layer (live)"), ("B", "B  direct: httpx2, thread pool")):
            rates[path] = (args.rows / min(times[path]), args.rows / statistics.median(times[path]))
            print(f"{label:<44}{rates[path][0]:>12.2f}{rates[path][1]:>15.2f}")
        best, median = rates["A"][0] / rates["B"][0], rates["A"][1] / rates["B"][1]
        print(f"\nratio A/B: {best:.1%} (best), {median:.1%} (median)  "
              f"(goal: >= {GOAL:.0%}: {'met' if best >= GOAL else 'NOT met'})")
        return 0
    finally:
        model.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted; the model server is stopped")
