"""--promptflow-backend ray on a real local Ray cluster of two nodes on 127.0.0.1, started here (once per module):
the same outputs and metrics as threads, rows on both nodes, the flow loaded once per worker, LLM calls counted
and stored in this session (through its proxy) with replay misses reported, a dying task failing only its rows,
and a bad address in one line. Heavy (a cluster start is about 25 s): run this file on its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
from conftest import SMALL, Project, jsonl
from fault_endpoint import FaultEndpoint
from test_llm_faults import FAST, PROMPTY

WORKTREE = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
TEXTS = ["a good day", "a bad day", "good food", "awful service"] * 4  # 16 rows: 8 batches over 2 workers

#: a class flow that writes one line per load (its pid) and one per row (its node and pid) beside itself
SUITE = '''\
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def note(name, line):
    with (HERE / name).open("a") as file:
        file.write(line + "\\n")


class Classifier:
    def __init__(self, word="good"):
        note("loads.log", str(os.getpid()))
        self.word = word

    def __call__(self, text: str) -> dict:
        if text == "die":
            os._exit(3)
        ray = sys.modules.get("ray")
        node = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else "local"
        note("rows.log", f"{node} {os.getpid()}")
        return {"category": "positive" if self.word in text else "negative"}


@pytest.mark.promptflow(flow=Classifier, data=["data/first.jsonl", "data/second.jsonl"])
def test_rows(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0
'''

#: promptflow flows on the workers too: a DAG with variants, and an evaluation DAG whose aggregation node logs
PROMPTFLOW_SUITE = '''\
import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"})
def test_dag(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0


@pytest.mark.promptflow(flow="flows/ev", data="data/scored.jsonl")
def test_aggregation(flow_run):
    assert flow_run.metrics["accuracy"] == 0.75
'''

#: a callable whose OpenAI() client reads the SDK environment: the embedded model, through the call layer
LLM_SUITE = '''\
import pytest
from openai import OpenAI


def answer(text: str) -> dict:
    reply = OpenAI(max_retries=0).chat.completions.create(
        model="gpt-35-turbo", messages=[{"role": "user", "content": f"Say {text}."}], max_tokens=4, temperature=0)
    return {"answer": reply.choices[0].message.content}


@pytest.mark.promptflow(flow=answer, data="data/words.jsonl")
def test_answers(flow_run):
    assert flow_run.rows
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_node(arguments: list[str], temp: Path, environ: dict[str, str]) -> int:
    """``ray start`` in a process group of its own (its daemons stay in it); that group's id."""
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", str(temp)]
    process = subprocess.Popen([str(RAY), "start", *arguments, *common], env=environ, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output
    return process.pid


def stop_groups(groups: set[int]) -> None:
    """Ends this cluster's processes only: those of the groups its ``ray start`` calls made, and their children
    (workers lead groups of their own). ``ray stop`` would end every Ray process of the machine's user."""
    found: set[psutil.Process] = set()
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in groups:
                found.update([process, *process.children(recursive=True)])
        except (ProcessLookupError, psutil.Error):
            continue
    for process in found:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(found, timeout=15)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def cluster(home: Path) -> Iterator[str]:
    """A head and a worker node, one CPU each, on 127.0.0.1; their address. Stopped after the module."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    environ = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(WORKTREE), os.environ.get("PYTHONPATH")]))}
    port = free_port()
    groups = set()
    try:
        groups.add(start_node(["--head", "--port", str(port), "--include-dashboard=false", "--dashboard-port",
                               str(free_port())], temp, environ))
        groups.add(start_node(["--address", f"127.0.0.1:{port}"], temp, environ))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
            patch.setenv("PYTHONPATH", environ["PYTHONPATH"])
            yield f"127.0.0.1:{port}"
    finally:
        stop_groups(groups)
        shutil.rmtree(temp, ignore_errors=True)


def ray_run(pytester: pytest.Pytester, address: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--promptflow-backend", "ray",
                                         "--promptflow-ray-address", address, *args)


def threads_run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def cells(pytester: pytest.Pytester, report: str) -> dict[str, dict[str, Any]]:
    """Cell id -> its rows' outputs and errors and its metrics but latency, from report.json."""
    document = json.loads((pytester.path / report / "report.json").read_text(encoding="utf-8"))
    return {cell["cell"]: {"rows": [(row.get("outputs"), row.get("error")) for row in cell["rows"]],
                         "metrics": {k: v for k, v in cell["metrics"].items() if not k.startswith("latency")}}
            for flow in document["flows"] for cell in flow["cells"]}


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".jsonl", **{"data/first": jsonl({"text": text} for text in TEXTS),
                                   "data/second": jsonl({"text": text.upper()} for text in TEXTS)})
    pytester.makepyfile(test_suite=SUITE, test_promptflow=PROMPTFLOW_SUITE)
    project = Project(pytester)
    project.dag_flow(), project.eval_flow(), project.data()
    project.data("scored", [{"groundtruth": row["label"], "prediction": "positive"} for row in SMALL[:3]] +
                 [{"groundtruth": "negative", "prediction": "negative"}])
    return pytester


def test_rows_run_on_both_nodes_as_threads_would_with_the_flow_loaded_once_per_worker(
        suite: pytest.Pytester, cluster: str) -> None:
    threads_run(suite, "--promptflow-report=threads").assert_outcomes(passed=5)
    (suite.path / "loads.log").unlink()
    (suite.path / "rows.log").unlink()
    on_ray = ray_run(suite, cluster, "--promptflow-report=ray")
    on_ray.assert_outcomes(passed=5)
    on_ray.stdout.fnmatch_lines([f"promptflow: 5 cells, rows on the Ray cluster at {cluster}, 1 at a time per worker"])
    assert cells(suite, "ray") == cells(suite, "threads")
    ran = [line.split() for line in lines(suite.path / "rows.log")]
    assert len(ran) == 2 * len(TEXTS) and len({node for node, _ in ran}) == 2  # two cells' rows, on both nodes
    workers = {pid for _, pid in ran}
    loads = lines(suite.path / "loads.log")
    assert len(workers) == 2 and sorted(pid for pid in loads if pid in workers) == sorted(workers)  # once each
    assert not [path.name for path in suite.path.iterdir() if path.name.startswith(".")]  # pytester's HOME


def test_a_task_that_dies_fails_its_rows_in_one_line_and_the_rest_survive(
        pytester: pytest.Pytester, cluster: str) -> None:
    pytester.makefile(".jsonl", **{"data/first": jsonl({"text": t} for t in [*TEXTS[:7], "die"]),
                                   "data/second": jsonl({"text": t} for t in TEXTS[:8])})
    pytester.makepyfile(test_suite=SUITE)
    result = ray_run(pytester, cluster, "--promptflow-report=out")
    result.assert_outcomes(passed=1, failed=1)
    first, second = cells(pytester, "out").values()
    failed = [error for _, error in first["rows"] if error]
    assert len(failed) == 1 and "\n" not in str(failed[0]), failed  # 8 rows in 8 batches: only its own
    assert "the Ray worker running it exited (its batch was tried twice): " in str(failed[0])
    assert all(outputs for outputs, _ in second["rows"])


def test_llm_calls_go_through_the_sessions_store_counted_and_a_replay_miss_is_reported(
        pytester: pytest.Pytester, cluster: str) -> None:
    pytester.makefile(".jsonl", **{"data/words": jsonl({"text": word} for word in ["yes", "no", "maybe"])})
    pytester.makepyfile(test_llm=LLM_SUITE)
    store = ("--promptflow-llm=cache", "--promptflow-llm-store", "store")
    ray_run(pytester, cluster, *store, "--promptflow-report=ray").assert_outcomes(passed=1)
    stored = sorted((pytester.path / "store").rglob("*.json"))
    assert len(stored) == 3  # the workers' answers went to this session's store
    threads_run(pytester, *store, "--promptflow-report=threads").assert_outcomes(passed=1)
    on_ray, on_threads = (next(iter(cells(pytester, name).values())) for name in ("ray", "threads"))
    assert on_ray["rows"] == on_threads["rows"]
    assert on_ray["metrics"]["llm.calls"] == on_threads["metrics"]["llm.calls"] == 3
    assert on_ray["metrics"]["llm.cache_hits"] == 0 and on_threads["metrics"]["llm.cache_hits"] == 3
    assert on_ray["metrics"]["tokens.total"] == on_threads["metrics"]["tokens.total"] > 0

    pytester.makefile(".jsonl", **{"data/words": jsonl({"text": word} for word in ["yes", "never"])})
    missed = ray_run(pytester, cluster, "--promptflow-llm=replay", "--promptflow-llm-store", "store")
    missed.stdout.fnmatch_lines(["*flow answer, row 1 of dataset words: no recorded answer for chat/completions*"])


def test_a_connection_limit_holds_across_the_cluster(pytester: pytest.Pytester, cluster: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers, two rows at once in each: the calls overlap, unless ``concurrency=1`` holds them to one."""
    pytester.makefile(".jsonl", **{"data/rows": jsonl({"text": f"limited row {i}"} for i in range(8))})
    pytester.makefile(".prompty", **{"flows/echo": PROMPTY})
    pytester.makepyfile(test_echo='''
        import pytest

        @pytest.mark.promptflow(flow="flows/echo.prompty", data="data/rows.jsonl")
        def test_echo(flow_run):
            assert flow_run.metrics["error_rate"] == 0.0 and flow_run.metrics["llm.calls"] == 8
    ''')
    with FaultEndpoint(hold_until_in_flight=2, hold_seconds=5.0) as endpoint:
        monkeypatch.setenv("AOAI_API_KEY", "test-key-not-secret")
        monkeypatch.setenv("AOAI_API_BASE", endpoint.url)
        ray_run(pytester, cluster, "--promptflow-llm=live", "--promptflow-concurrency=2").assert_outcomes(passed=1)
        assert endpoint.max_in_flight >= 2
        endpoint.reset()
        endpoint.hold_until_in_flight, endpoint.hold_seconds = None, 0.05  # every answer takes a while
        pytester.makeini(FAST + "promptflow_llm_limits = aoai concurrency=1\n")
        ray_run(pytester, cluster, "--promptflow-llm=live", "--promptflow-concurrency=2").assert_outcomes(passed=1)
        assert endpoint.count() == 8 and endpoint.max_in_flight == 1


def test_a_missing_or_unreachable_address_is_one_usage_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    missing = pytester.runpytest_subprocess("--promptflow-backend", "ray")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["ERROR: pytest-promptflow: --promptflow-backend ray needs --promptflow-ray-address "
                                  "HOST:PORT*; fix: *ray start --head*"])
    unreachable = pytester.runpytest_subprocess("--promptflow-backend", "ray", "--promptflow-ray-address",
                                                f"127.0.0.1:{free_port()}")
    assert unreachable.ret == pytest.ExitCode.USAGE_ERROR
    unreachable.stderr.fnmatch_lines(["ERROR: pytest-promptflow: --promptflow-ray-address 127.0.0.1:*: no Ray "
                                      "cluster answers there (Connection refused); fix: *"])
    assert len([line for line in unreachable.stderr.lines if line.strip()]) == 1


def test_nothing_was_written_to_home(cluster: str, home: Path) -> None:
    """Ray's nodes, workers and the sessions' drivers kept out of the user's home (HOME pointed here)."""
    assert cluster and sorted(home.rglob("*")) == []
