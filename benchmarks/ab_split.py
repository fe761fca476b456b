"""Does a local endpoint's router split traffic as configured? And how do its deployments compare?

Sends N requests (rows of a dataset, round robin) to an endpoint's router at a given concurrency,
counts which deployment answered each (the ``azureml-model-deployment`` response header), and
prints, per deployment: the configured share, the requests it got and the expected count, the
deviation in binomial standard deviations, and the router's own counts, errors and latency over
exactly these requests (its ``/stats`` before and after).

    python benchmarks/ab_split.py sentiment --data evals/data/sentiment.jsonl --requests 300

Run it after two releases of a flow (``pytest evals/ --promptflow-release`` twice, with a changed
prompt in between), so the endpoint has blue and green; ``pytest-promptflow deployments`` lists them.
"""

from __future__ import annotations

import argparse
import json
import math
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_promptflow.cli import DEPLOY_DIR, project_root
from pytest_promptflow.deploy.base import PIN_HEADER
from pytest_promptflow.deploy.local import LocalTarget

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def send(url: str, row: dict[str, object]) -> str:
    request = urllib.request.Request(url, json.dumps(row).encode(), {"Content-Type": "application/json"})
    with _direct.open(request, timeout=300) as response:
        response.read()
        return str(response.headers.get(PIN_HEADER, "?"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("--data", type=Path, required=True, help="JSONL rows; each is sent as the request body")
    parser.add_argument("--inputs", default="text", help="comma-separated columns that are the flow's inputs")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=project_root(Path.cwd()) / DEPLOY_DIR)
    args = parser.parse_args()

    target = LocalTarget(args.dir)
    url = target.router_url(args.endpoint) + "/score"
    columns = args.inputs.split(",")
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    bodies = [{c: rows[i % len(rows)][c] for c in columns} for i in range(args.requests)]
    traffic = target.traffic(args.endpoint)
    before = target.stats(args.endpoint)["deployments"]
    with ThreadPoolExecutor(args.concurrency) as pool:
        served = Counter(pool.map(lambda body: send(url, body), bodies))
    after = target.stats(args.endpoint)["deployments"]

    n = args.requests
    print(f"endpoint {args.endpoint}: {n} requests at concurrency {args.concurrency}, traffic {traffic}")
    print(f"{'deployment':<11}{'share':>6}{'got':>6}{'expected':>10}{'z':>7}{'router':>8}{'errors':>8}"
          f"{'mean s':>9}{'p95 s':>8}")
    for name, share in sorted(traffic.items()):
        p = share / 100
        expected, sigma = n * p, math.sqrt(n * p * (1 - p)) or 1.0
        old, new = before.get(name, {"requests": 0, "errors": 0}), after.get(name, {})
        counted = new.get("requests", 0) - old["requests"]
        errors = new.get("errors", 0) - old["errors"]
        # the router's mean is over all its requests; this run's mean is the difference of the totals
        total = new.get("latency_mean", 0) * new.get("requests", 0) - old.get("latency_mean", 0) * old["requests"]
        mean = total / counted if counted else float("nan")
        print(f"{name:<11}{share:>5}%{served[name]:>6}{expected:>10.1f}{(served[name] - expected) / sigma:>7.2f}"
              f"{counted:>8}{errors:>8}{mean:>9.3f}{new.get('latency_p95', float('nan')):>8.3f}")


if __name__ == "__main__":
    main()
