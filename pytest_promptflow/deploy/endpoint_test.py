"""The endpoint test: a new deployment answers the released cells' rows before it gets any traffic.

The rows the suite ran (or the first ``rows`` of each, a smoke subset) go to the new deployment
only, through its target. Then three things must hold: rows the suite's flow answered are answered
by the endpoint too; the answers' p95 latency is within the limit; and the suite's own items for the
released configuration pass again on the endpoint's answers, in a child pytest, with the same
evaluators and thresholds (see ``answers.py``). Every failure is one line of the table the
session prints.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pytest

from ..scrub import write_text
from .answers import Answer, EndpointAnswers
from .base import Target

CONCURRENCY = 4


def ask(target: Target, endpoint: str, deployment: str, cells: Sequence[Mapping[str, Any]],
        rows: int, progress: Callable[[int, int], None] | None = None) -> dict[str, list[Answer]]:
    """Each cell's rows (its first ``rows``, if not 0) sent to the deployment; answers by dataset. ``progress``
    hears ``(done, total)`` at each quarter of the rows and at the end."""
    sends = [cell["rows"][:rows] if rows else cell["rows"] for cell in cells]
    total = sum(len(sent) for sent in sends)
    marks = {math.ceil(total * quarter / 4) for quarter in range(1, 5)}
    done = [0]
    lock = threading.Lock()

    def one(inputs: Mapping[str, Any]) -> Answer:
        start = time.perf_counter()
        try:
            outputs, error = dict(target.invoke(endpoint, deployment, inputs)), None
        except Exception as exc:  # every failing answer is a row of the test, never a crash of the release
            outputs, error = None, f"{type(exc).__name__}: {exc}"
        answer = Answer(inputs, outputs, error, time.perf_counter() - start)
        with lock:
            done[0] += 1
            if progress is not None and done[0] in marks:
                progress(done[0], total)
        return answer

    answers: dict[str, list[Answer]] = {}
    with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="promptflow-endpoint") as pool:
        for cell, sent in zip(cells, sends, strict=True):
            answers[cell["dataset"]] = list(pool.map(one, [row["inputs"] for row in sent]))
    return answers


def answer_failures(cells: Sequence[Mapping[str, Any]], answers: Mapping[str, list[Answer]],
                    latency_limit: float) -> list[str]:
    """Rows the suite's flow answered that the endpoint did not, and a p95 latency over the limit."""
    failures = []
    for cell in cells:
        sent = answers[cell["dataset"]]
        lost = [(row["index"], answer.error) for row, answer in zip(cell["rows"], sent, strict=False)
                if row["error"] is None and answer.error]
        if lost:
            index, error = lost[0]
            failures.append(f"dataset {cell['dataset']}: {len(lost)} of {len(sent)} rows the flow answered in the "
                            f"suite failed at the endpoint, e.g. row {index}: {error[:200]}")
    latencies = sorted(a.latency for sent in answers.values() for a in sent)
    if latencies:
        p95 = latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)]
        if p95 > latency_limit:
            failures.append(f"latency p95 {p95:.2f} s over {len(latencies)} requests > "
                            f"{latency_limit:g} s (ini promptflow_endpoint_latency)")
    return failures


def rerun_items(config: pytest.Config, answers: EndpointAnswers, nodeids: Sequence[str],
                folder: Path, llm: tuple[str, Path]) -> tuple[int, dict[str, Any] | None, str]:
    """The suite's items again in a child pytest, answered by the endpoints: (exit code, its report
    document, its last output line). ``llm`` (mode, store): the child answers evaluators' LLM calls as
    the suite did."""
    folder.mkdir(parents=True, exist_ok=True)
    answers_file = folder / "answers.json"
    answers.write(answers_file)
    report = folder / "report"
    command = [sys.executable, "-m", "pytest", *nodeids, "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--rootdir", str(config.rootpath), "--promptflow-endpoint-answers", str(answers_file),
               "--promptflow-report", str(report), "--promptflow-llm", llm[0], "--promptflow-llm-store", str(llm[1])]
    if config.inipath is not None:
        command += ["-c", str(config.inipath)]
    if config.getoption("promptflow_env"):
        command += ["--promptflow-env", config.getoption("promptflow_env")]
    if config.getoption("promptflow_allow_outside_root"):  # the ini value comes with -c
        command.append("--promptflow-allow-outside-root")
    environ = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    done = subprocess.run(command, cwd=config.rootpath, env=environ, capture_output=True, text=True, check=False)
    write_text(folder / "pytest.log", done.stdout + done.stderr)
    document_file = report / "report.json"
    document = json.loads(document_file.read_text(encoding="utf-8")) if document_file.is_file() else None
    if document is not None:  # a report folder keeps an earlier run's cells: the verdicts are this run's alone
        from ..reporting.history import own_cells

        document = own_cells(document)
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    tail = f"{lines[-1] if lines else 'no output'} (log: {folder / 'pytest.log'})"
    return done.returncode, document, tail


def verdict_failures(document: Mapping[str, Any] | None, flow: str, exit_code: int, tail: str) -> list[str]:
    """The thresholds (and items) of ``flow`` that failed on the endpoint's answers."""
    if document is None:
        return [f"the suite could not re-run on the endpoint's answers (exit code {exit_code}): {tail}"]
    failures = []
    cells = [cell for entry in document["flows"] if entry["flow"] == flow for cell in entry["cells"]]
    if not cells:
        return [f"no item of flow {flow} ran on the endpoint's answers (exit code {exit_code}): {tail}"]
    for cell in cells:
        failed = [v for v in cell["verdicts"] if not v["passed"]]
        for verdict in failed:
            actual = "missing" if verdict["actual"] is None else f"{verdict['actual']:.4g}"
            failures.append(f"dataset {cell['dataset']}: {verdict['metric']} {verdict['op']} "
                            f"{verdict['threshold']:g} failed on the endpoint's answers ({actual})")
        if not failed:
            failures.extend(f"dataset {cell['dataset']}: {item['nodeid']} {item['outcome']} on the endpoint's answers"
                            for item in cell["items"] if item["outcome"] != "passed")
    return failures
