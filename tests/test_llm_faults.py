"""LLM calls against a real local endpoint that fails on request (fault_endpoint.py): retries, error
rows, tokens and cost, the answer store, per-connection limits, and credentials that are never written.

Each test writes a small project whose flows (a .prompty, a DAG with an llm node, plain callables
using the OpenAI SDK) reach the endpoint through connection ``aoai`` (``AOAI_API_KEY`` /
``AOAI_API_BASE``), runs pytest in it, and compares what the rows and metrics say with what the
endpoint saw.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

# httpcore2 and our call layer are imported here so that the in-process runs share them with this
# test (and its monkeypatches) instead of importing them afresh. httpcore2 above all: httpx2 maps its
# exceptions to its own once per process, so a second run's new httpcore2 would raise errors (a
# dropped connection, a timeout) that neither our layer nor the OpenAI SDK recognise.
import httpcore2  # noqa: F401
import pytest
from conftest import Project, run
from fault_endpoint import NO_COMPLETION, FaultEndpoint, attempts_needed

import pytest_promptflow.llm.calls as calls
import pytest_promptflow.llm.intercept  # noqa: F401
import pytest_promptflow.llm.limits as limits
from pytest_promptflow.isolation import private_home

DEPLOYMENT = "gpt-35-turbo"
FAST = "[pytest]\npromptflow_llm_backoff = 0.01\n"

PROMPTY = f"""\
---
name: Echo
model:
  api: chat
  configuration:
    type: azure_openai
    azure_deployment: {DEPLOYMENT}
    connection: aoai
  parameters:
    temperature: 0.0
    max_tokens: 20
inputs:
  text:
    type: string
---
system:
Repeat the message.

user:
{{{{text}}}}
"""

DAG = f"""\
inputs:
  text:
    type: string
outputs:
  output:
    type: string
    reference: ${{echo.output}}
nodes:
- name: echo
  type: llm
  source:
    type: code
    path: echo.jinja2
  inputs:
    deployment_name: {DEPLOYMENT}
    temperature: 0.0
    max_tokens: 20
    text: ${{inputs.text}}
  provider: AzureOpenAI
  connection: aoai
  api: chat
  module: promptflow.tools.aoai
"""

JINJA = """\
# system:
Repeat the message.

# user:
{{text}}
"""

#: Writes each run's rows and metrics to <test name>.json, for the outer test to compare.
DUMP = '''\
import json
import os

import openai
import pytest

DEPLOYMENT = "gpt-35-turbo"


def dump(flow_run, request):
    rows = [{"index": r.index, "text": r.data["text"], "outputs": r.outputs, "error_type": r.error_type,
             "error_message": r.error_message, "llm_calls": r.llm_calls, "cache_hits": r.cache_hits,
             "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens, "cost": r.cost}
            for r in flow_run.rows]
    with open(request.node.originalname + ".json", "w") as file:
        json.dump({"rows": rows, "metrics": dict(flow_run.metrics)}, file)


def client(kind=openai.AzureOpenAI):
    return kind(api_key=os.environ["AOAI_API_KEY"], azure_endpoint=os.environ["AOAI_API_BASE"],
                api_version="2024-02-01")


def echo(text):
    reply = client().chat.completions.create(model=DEPLOYMENT, messages=[{"role": "user", "content": text}])
    return {"output": reply.choices[0].message.content}


async def echo_async(text):
    reply = await client(openai.AsyncAzureOpenAI).chat.completions.create(
        model=DEPLOYMENT, messages=[{"role": "user", "content": text}])
    return {"output": reply.choices[0].message.content}
'''


def case(name: str, flow: str, data: str = "data/rows.jsonl", body: str = "") -> str:
    return f'''

@pytest.mark.promptflow(flow={flow}, data="{data}")
def {name}(flow_run, request):
    dump(flow_run, request)
{body}'''


@dataclass(frozen=True)
class Report:
    """What one generated test saw: its run's rows and built-in metrics."""

    rows: list[dict[str, Any]]
    metrics: dict[str, float]

    @classmethod
    def read(cls, path: Path) -> Report:
        data = json.loads(path.read_text())
        return cls(data["rows"], data["metrics"])

    @property
    def failed(self) -> list[str]:
        return [row["text"] for row in self.rows if row["error_type"]]

    @property
    def outputs(self) -> dict[str, str | None]:
        return {row["text"]: (row["outputs"] or {}).get("output") for row in self.rows}


@pytest.fixture
def endpoint() -> Iterator[FaultEndpoint]:
    with FaultEndpoint() as server:
        yield server


@pytest.fixture
def llm_project(project: Project, endpoint: FaultEndpoint, monkeypatch: pytest.MonkeyPatch) -> Project:
    """A project whose connection ``aoai`` reaches the endpoint, with millisecond backoff."""
    monkeypatch.setenv("AOAI_API_KEY", "test-key-not-secret")
    monkeypatch.setenv("AOAI_API_BASE", endpoint.url)
    project.write("flows/echo.prompty", PROMPTY)
    project.write("flows/echo_dag/flow.dag.yaml", DAG)
    project.write("flows/echo_dag/echo.jinja2", JINJA)
    project.pytester.makeini(FAST)
    return project


def rows(project: Project, texts: Sequence[str], name: str = "rows") -> str:
    return project.data(name, [{"text": text} for text in texts])


def write_tests(project: Project, *cases: str) -> None:
    project.pytester.makepyfile(test_flows=DUMP + "".join(cases))


def report(project: Project, name: str) -> Report:
    return Report.read(project.path / f"{name}.json")


# --- retries ---------------------------------------------------------------------------------------

TRANSIENT = [
    "a plain row",
    "[first:429] rate limited once",
    "[first:500,500] two server errors",
    "[first:drop] one dropped connection",
    "[first:429,drop,500] three different faults",
]
TIMEOUT = "[first:slow] one timeout"


class Sleeps:
    """Stands in for the call layer's ``time`` module and records the waits between attempts."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_transient_faults_are_retried_until_every_row_succeeds(
        llm_project: Project, endpoint: FaultEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .prompty and a DAG llm node (the sync client) and an async callable, each with its own rows."""
    texts = {"prompty": [f"{t} (prompty)" for t in [*TRANSIENT, TIMEOUT]],
             "dag": [f"{t} (dag)" for t in TRANSIENT],
             "callable": [f"{t} (async)" for t in [*TRANSIENT, TIMEOUT]]}
    for name, flow_texts in texts.items():
        rows(llm_project, flow_texts, name)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"', "data/prompty.jsonl"),
                case("test_dag", '"flows/echo_dag"', "data/dag.jsonl"),
                case("test_callable", "echo_async", "data/callable.jsonl"))
    endpoint.retry_after = "0.2"
    sleeps = Sleeps()
    monkeypatch.setattr(calls, "time", sleeps)
    result = run(llm_project.pytester, "--promptflow-llm=live", "--promptflow-llm-timeout=2",
                 "--promptflow-llm-retries=3")
    result.assert_outcomes(passed=3)
    for name, flow_texts in texts.items():
        got = report(llm_project, f"test_{name}")
        assert got.failed == [], name
        assert got.metrics["error_rate"] == 0.0
        assert got.outputs == {text: endpoint.answer(text) for text in flow_texts}
        assert {t: endpoint.count(t) for t in flow_texts} == {t: attempts_needed(t) for t in flow_texts}
    everything = [text for flow_texts in texts.values() for text in flow_texts]
    assert endpoint.count() == sum(attempts_needed(text) for text in everything)
    # the sync flows waited exactly the server's Retry-After after each 429, backoff otherwise
    sync = [r for r in endpoint.requests if not r.message.endswith("(async)")]
    assert len(sleeps.waits) == sum(r.fault is not None for r in sync)
    assert sleeps.waits.count(0.2) == sum(r.fault == "429" for r in sync) == 4


PERMANENT = [
    "first good row",
    "[always:500] server error every time",
    "second good row",
    "[always:429] rate limited every time",
    "[always:drop] connection dropped every time",
    "third good row",
    "[always:malformed] a broken body",
    "fourth good row",
]
LAST_FAILURE = {"500": "HTTP 500", "429": "HTTP 429", "drop": "RemoteProtocolError"}


def test_permanent_faults_fail_exactly_their_rows_and_are_never_stored(
        llm_project: Project, endpoint: FaultEndpoint) -> None:
    texts = {"prompty": [f"{t} (prompty)" for t in PERMANENT], "dag": [f"{t} (dag)" for t in PERMANENT],
             "callable": [f"{t} (callable)" for t in PERMANENT]}
    for name, flow_texts in texts.items():
        rows(llm_project, flow_texts, name)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"', "data/prompty.jsonl"),
                case("test_dag", '"flows/echo_dag"', "data/dag.jsonl"),
                case("test_callable", "echo", "data/callable.jsonl"))
    run(llm_project.pytester, "--promptflow-llm-retries=2").assert_outcomes(passed=3)
    for name, flow_texts in texts.items():
        got = report(llm_project, f"test_{name}")
        bad = [t for t in flow_texts if "[always:" in t]
        assert [row["index"] for row in got.rows] == list(range(len(PERMANENT))), name  # no row lost
        assert got.failed == bad
        assert got.metrics["error_rate"] == len(bad) / len(flow_texts) == 0.5
        assert got.metrics["rows"] == len(flow_texts)
        assert got.outputs == {t: None if t in bad else endpoint.answer(t) for t in flow_texts}
        for row in got.rows:
            fault = row["text"].partition("[always:")[2].partition("]")[0]
            if fault in LAST_FAILURE:  # given up by our layer after every retry
                assert f"gave up after 3 attempts, last: {LAST_FAILURE[fault]}" in row["error_message"]
                assert endpoint.count(row["text"]) == 3
            elif fault == "malformed":  # an answer nobody can read: not retried, the row fails in one line
                assert NOT_ANSWERED.format("aoai").replace("no completion (keys: error, retry)",
                                                           "a body that is not JSON") in row["error_message"]
                assert "JSONDecodeError" not in f"{row['error_type']}: {row['error_message']}"
                assert endpoint.count(row["text"]) == 1
            else:
                assert endpoint.count(row["text"]) == 1
    answers = stored(llm_project.path / ".promptflow-llm")
    assert len(answers) == 3 * 4  # the good rows' answers only
    assert not [text for text in answers.values() if "[always:" in text or "chatcmpl-broken" in text]
    # the next run answers the good rows from the store and asks the model again for the bad ones
    endpoint.reset()
    run(llm_project.pytester, "--promptflow-llm-retries=2").assert_outcomes(passed=3)
    again = {name: report(llm_project, f"test_{name}") for name in texts}
    assert all(got.failed == [t for t in texts[name] if "[always:" in t] for name, got in again.items())
    assert {r.message for r in endpoint.requests} == {t for ts in texts.values() for t in ts if "[always:" in t}


def test_seeded_random_faults_are_all_overcome(llm_project: Project, endpoint: FaultEndpoint) -> None:
    texts = [f"row number {i} of twenty" for i in range(20)]
    rows(llm_project, texts)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"'))
    endpoint.random_rate, endpoint.seed = 0.3, 2024
    run(llm_project.pytester, "--promptflow-llm=live", "--promptflow-llm-retries=8").assert_outcomes(passed=1)
    got = report(llm_project, "test_prompty")
    assert got.failed == [] and got.metrics["error_rate"] == 0.0
    assert got.outputs == {text: endpoint.answer(text) for text in texts}
    injected = endpoint.faults()
    assert len(injected) >= 3  # the seed does inject faults, so the test means something
    assert endpoint.count() == len(texts) + len(injected)
    assert all(endpoint.count(text) == 1 + sum(1 for r in endpoint.requests if r.message == text and r.fault)
               for text in texts)


# --- tokens and cost -------------------------------------------------------------------------------

PRICE_PROMPT, PRICE_COMPLETION = 0.5, 1.5  # per 1K tokens
SYSTEM_WORDS = 3  # "Repeat the message."
PRICES = f"promptflow_llm_prices = {DEPLOYMENT} prompt={PRICE_PROMPT} completion={PRICE_COMPLETION}\n"
COSTED = ["one two three", "four five", "six", "[always:500] seven eight", "nine ten eleven twelve"]


def expected_cost(texts: Sequence[str], system_words: int) -> float:
    """What the endpoint will report for the texts that get an answer, priced per 1K tokens."""
    answered = [len(t.split()) for t in texts if "[always:" not in t]
    prompt = sum(system_words + n for n in answered)
    completion = sum(1 + n for n in answered)  # "echo: " and the text
    return (prompt * PRICE_PROMPT + completion * PRICE_COMPLETION) / 1000


def test_tokens_and_cost_are_what_the_endpoint_reported(llm_project: Project, endpoint: FaultEndpoint) -> None:
    llm_project.pytester.makeini(FAST + PRICES)
    rows(llm_project, COSTED)
    rows(llm_project, [f"{t} again" for t in COSTED], "async")
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"'),
                case("test_callable", "echo_async", "data/async.jsonl"))
    run(llm_project.pytester, "--promptflow-llm=live", "--promptflow-llm-retries=0").assert_outcomes(passed=2)
    prompty, callable_ = report(llm_project, "test_prompty"), report(llm_project, "test_callable")
    for got in (prompty, callable_):
        assert got.metrics["error_rate"] == 0.2
        for row in got.rows:
            prompt, completion = endpoint.usage(row["text"])
            assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion)
            assert row["cost"] == pytest.approx((prompt * PRICE_PROMPT + completion * PRICE_COMPLETION) / 1000,
                                                rel=1e-12)
        assert got.metrics["tokens.total"] == got.metrics["tokens.prompt"] + got.metrics["tokens.completion"]
    assert prompty.metrics["tokens.prompt"] + callable_.metrics["tokens.prompt"] == endpoint.prompt_tokens
    assert prompty.metrics["tokens.completion"] + callable_.metrics["tokens.completion"] == endpoint.completion_tokens
    assert endpoint.prompt_tokens > 0
    assert prompty.metrics["cost.total"] == pytest.approx(expected_cost(COSTED, SYSTEM_WORDS), rel=1e-12)
    assert callable_.metrics["cost.total"] == pytest.approx(
        expected_cost([f"{t} again" for t in COSTED], 0), rel=1e-12)


def test_cost_thresholds_in_experiment_yaml_and_in_a_test(llm_project: Project) -> None:
    llm_project.pytester.makeini(FAST + PRICES)
    rows(llm_project, COSTED)
    rows(llm_project, COSTED, "costed")  # a file of its own: the same file would be the same run
    cost = expected_cost(COSTED, SYSTEM_WORDS)
    for name, budget in (("within", cost * 1.01), ("over", cost * 0.99)):
        llm_project.experiment(f"""\
            name: budget_{name}
            flow: ../flows/echo.prompty
            datasets:
            - name: costed
              source: ../data/costed.jsonl
            thresholds:
              cost.total: "<= {budget!r}"
        """, folder=f"exp_{name}")
    write_tests(llm_project, case("test_within", '"flows/echo.prompty"', body=f"""\
    result = flow_run.evaluate(lambda output: {{"words": len(output.split())}},
                               mapping={{"output": "${{run.outputs.output}}"}})
    # "echo:" and the text of each answered row; the failed row is not judged and scores the worst value, 0
    assert result.metrics["words"] == pytest.approx((4 + 3 + 2 + 0 + 5) / 5)
    assert result.metrics["cost.total"] <= {cost * 1.01!r}
"""), case("test_over", '"flows/echo.prompty"', body=f"""\
    assert flow_run.metrics["cost.total"] <= {cost * 0.99!r}
"""))
    result = run(llm_project.pytester, "-v", "--promptflow-llm-retries=0")
    result.assert_outcomes(passed=2, failed=2)
    for line in ("*budget_within?echo-costed? PASSED*", "*budget_over?echo-costed? FAILED*",
                 "*test_within?echo-rows? PASSED*", "*test_over?echo-rows? FAILED*"):
        result.stdout.fnmatch_lines([line])
    result.stdout.fnmatch_lines(["*1 of 1 thresholds failed for cell echo-costed (5 rows, 1 failed and scored worst)*",
                                 f"*cost.total*{cost:.4g}*<= {cost * 0.99:g}*FAIL*"])
    result.stdout.fnmatch_lines([f"*cost.total {cost:.4g} <= {cost * 0.99:g} failed for cell echo-rows "
                                 "(5 rows, 1 failed and scored worst)*"])


# --- the answer store ------------------------------------------------------------------------------

CACHED = ["alpha one", "beta two", "gamma three"]


def stored(store: Path) -> dict[str, str]:
    return {str(path.relative_to(store)): path.read_text() for path in sorted(store.rglob("*")) if path.is_file()}


def test_cache_answers_without_requests_live_stores_nothing_record_refreshes(
        llm_project: Project, endpoint: FaultEndpoint) -> None:
    pytester, store = llm_project.pytester, llm_project.path / ".promptflow-llm"
    callable_texts = [f"{t} (callable)" for t in CACHED]
    rows(llm_project, CACHED)
    rows(llm_project, callable_texts, "callable")
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"'),
                case("test_callable", "echo", "data/callable.jsonl"))
    texts = {"prompty": CACHED, "callable": callable_texts}

    def outputs(prefix: str) -> dict[str, dict[str, str | None]]:
        return {name: {t: f"{prefix} {t}" for t in flow_texts} for name, flow_texts in texts.items()}

    def run_and_report(*args: str) -> dict[str, Report]:
        endpoint.reset()
        run(pytester, *args).assert_outcomes(passed=2)
        return {name: report(llm_project, f"test_{name}") for name in texts}

    first = run_and_report()
    assert endpoint.count() == 6 and len(stored(store)) == 6
    assert all(got.metrics["latency.rows"] == 3 and got.metrics["llm.cache_hits"] == 0 for got in first.values())

    second = run_and_report()
    assert endpoint.count() == 0
    for name, got in second.items():
        assert [(r["llm_calls"], r["cache_hits"]) for r in got.rows] == [(1, 1)] * 3
        assert got.outputs == outputs("echo:")[name]
        assert (got.metrics["llm.calls"], got.metrics["llm.cache_hits"], got.metrics["latency.rows"]) == (3, 3, 0)
        assert "latency.mean" not in got.metrics and "latency.p95" not in got.metrics
        assert [(r["prompt_tokens"], r["completion_tokens"]) for r in got.rows] == [
            (r["prompt_tokens"], r["completion_tokens"]) for r in first[name].rows]

    before = stored(store)
    endpoint.prefix = "fresh:"
    live = run_and_report("--promptflow-llm=live")
    assert endpoint.count() == 6
    assert {name: got.outputs for name, got in live.items()} == outputs("fresh:")
    assert all(got.metrics["llm.cache_hits"] == 0 and got.metrics["latency.rows"] == 3 for got in live.values())
    assert stored(store) == before  # live stored nothing

    cached = run_and_report()
    assert endpoint.count() == 0
    assert {name: got.outputs for name, got in cached.items()} == outputs("echo:")

    recorded = run_and_report("--promptflow-llm=record")
    assert endpoint.count() == 6
    assert {name: got.outputs for name, got in recorded.items()} == outputs("fresh:")
    after = stored(store)
    assert after.keys() == before.keys()  # the same requests, their answers replaced
    assert all("fresh:" in text and "echo:" not in text for text in after.values())

    refreshed = run_and_report()
    assert endpoint.count() == 0
    assert {name: got.outputs for name, got in refreshed.items()} == outputs("fresh:")


def test_record_asks_each_request_once_per_run_so_replay_gives_back_what_was_recorded(
        llm_project: Project, endpoint: FaultEndpoint) -> None:
    """Two cells sending the same requests: the second gets the first's fresh answers, not another draw
    that would overwrite them (replay would then hand the first cell answers it never saw)."""
    write_tests(llm_project, case("test_first", '"flows/echo.prompty"', rows(llm_project, CACHED, "first")),
                case("test_second", '"flows/echo.prompty"', rows(llm_project, CACHED, "second")))
    run(llm_project.pytester).assert_outcomes(passed=2)  # an older answer for each request
    endpoint.reset()
    endpoint.prefix = "fresh:"
    run(llm_project.pytester, "--promptflow-llm=record").assert_outcomes(passed=2)
    assert endpoint.count() == len(CACHED)  # refreshed once each, not once per cell
    recorded = {name: report(llm_project, f"test_{name}") for name in ("first", "second")}
    assert all(got.outputs == {t: f"fresh: {t}" for t in CACHED} for got in recorded.values())
    assert sorted(got.metrics["llm.cache_hits"] for got in recorded.values()) == [0, len(CACHED)]
    endpoint.reset()
    run(llm_project.pytester, "--promptflow-llm=replay").assert_outcomes(passed=2)
    assert endpoint.count() == 0
    assert all(report(llm_project, f"test_{name}").outputs == got.outputs for name, got in recorded.items())


NOT_ANSWERED = "LLM endpoint {} answered HTTP 200 with no completion (keys: error, retry); not stored"


def test_a_200_that_is_no_completion_fails_its_row_in_one_line_is_not_stored_and_is_asked_again(
        llm_project: Project, endpoint: FaultEndpoint) -> None:
    """A provider's hiccup sent as status 200: the row fails saying so, and once it recovers the row passes."""
    texts = {"prompty": ["a good row (prompty)", "[first:nocompletion] a hiccup (prompty)"],
             "callable": ["a good row (callable)", "[first:nocompletion] a hiccup (callable)"],
             "async": ["a good row (async)", "[first:nocompletion] a hiccup (async)"]}
    for name, flow_texts in texts.items():
        rows(llm_project, flow_texts, name)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"', "data/prompty.jsonl"),
                case("test_callable", "echo", "data/callable.jsonl"),
                case("test_async", "echo_async", "data/async.jsonl"))
    store = llm_project.path / ".promptflow-llm"
    run(llm_project.pytester, "--promptflow-llm-retries=2").assert_outcomes(passed=3)
    for name, (_, hiccup) in texts.items():
        got = report(llm_project, f"test_{name}")
        assert got.failed == [hiccup], name
        message = next(row["error_message"] for row in got.rows if row["text"] == hiccup)
        assert NOT_ANSWERED.format("aoai") in message and "\n" not in message.strip(), message
        assert "TypeError" not in message
        assert endpoint.count(hiccup) == 1  # final: neither we nor the SDK retry it
    answers = stored(store)
    assert len(answers) == 3 and not [text for text in answers.values() if "upstream busy" in text]
    # the endpoint has recovered (the marker faults the first attempt only): the hiccup rows are asked again
    before = endpoint.count()  # not reset: attempt numbers go on, so the hiccups' next attempt is answered
    run(llm_project.pytester, "--promptflow-llm-retries=2").assert_outcomes(passed=3)
    for name, (good, hiccup) in texts.items():
        got = report(llm_project, f"test_{name}")
        assert got.failed == [] and got.outputs == {good: endpoint.answer(good), hiccup: endpoint.answer(hiccup)}
    assert sorted(r.message for r in endpoint.requests[before:]) == sorted(ts[1] for ts in texts.values())
    assert len(stored(store)) == 6


def test_a_stored_answer_that_is_no_completion_is_not_replayed(llm_project: Project, endpoint: FaultEndpoint) -> None:
    """An older version stored any 200 body: cache mode asks such a request again, replay names the file."""
    rows(llm_project, CACHED)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"'))
    store = llm_project.path / ".promptflow-llm"
    run(llm_project.pytester).assert_outcomes(passed=1)
    assert endpoint.count() == 3
    planted = sorted(store.rglob("*.json"))[0]

    def plant() -> None:
        entry = json.loads(planted.read_text())
        entry["response"]["body"] = NO_COMPLETION
        planted.write_text(json.dumps(entry))

    plant()
    endpoint.reset()
    run(llm_project.pytester).assert_outcomes(passed=1)
    assert endpoint.count() == 1  # the planted answer's request only, asked again
    assert report(llm_project, "test_prompty").failed == []
    assert "upstream busy" not in planted.read_text()  # and its good answer stored in place
    plant()
    endpoint.reset()
    replayed = run(llm_project.pytester, "--promptflow-llm=replay")
    assert endpoint.count() == 0
    replayed.stdout.fnmatch_lines([f"*no usable recorded answer for chat/completions of '{DEPLOYMENT}': "
                                   f"{planted} has no completion (keys: error, retry); not replayed*"])
    replayed.stdout.no_fnmatch_line("*Traceback*")


# --- per-connection limits -------------------------------------------------------------------------


def test_connection_concurrency_limit_holds_however_many_rows_run_at_once(
        llm_project: Project, endpoint: FaultEndpoint) -> None:
    pytester = llm_project.pytester
    texts = [f"limited row {i}" for i in range(6)]
    rows(llm_project, texts)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"'))
    # without a limit the rows' calls overlap: answers wait until two requests were in flight at once
    endpoint.hold_until_in_flight, endpoint.hold_seconds = 2, 5.0
    run(pytester, "--promptflow-llm=live", "--promptflow-concurrency=4").assert_outcomes(passed=1)
    assert endpoint.max_in_flight >= 2
    endpoint.reset()
    endpoint.hold_until_in_flight, endpoint.hold_seconds = None, 0.05  # every answer takes a while
    pytester.makeini(FAST + "promptflow_llm_limits = aoai concurrency=1\n")
    run(pytester, "--promptflow-llm=live", "--promptflow-concurrency=4").assert_outcomes(passed=1)
    got = report(llm_project, "test_prompty")
    assert got.failed == [] and got.outputs == {text: endpoint.answer(text) for text in texts}
    assert endpoint.count() == 6
    assert endpoint.max_in_flight == 1


class FakeClock:
    """Stands in for ``time`` and ``asyncio`` in limits.py: sleeping moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeAsyncio:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    async def sleep(self, seconds: float) -> None:
        self.clock.now += seconds


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_rpm_limit_starts_no_more_calls_per_window(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    clock = FakeClock()
    monkeypatch.setattr(limits, "time", clock)
    monkeypatch.setattr(limits, "asyncio", FakeAsyncio(clock))
    monkeypatch.setattr(limits, "WINDOW", 10.0)
    gate = limits.Gate(limits.Limit(rpm=2))
    starts: list[float] = []

    async def call_async() -> None:
        async with gate.async_slot():
            starts.append(clock.now)
            clock.now += 1  # each call takes a second

    for _ in range(5):
        if kind == "async":
            asyncio.run(call_async())
        else:
            with gate.slot():
                starts.append(clock.now)
                clock.now += 1
    assert starts == [0, 1, 10, 11, 20]


# --- credentials -----------------------------------------------------------------------------------

SECRET_ROWS = ["a good row", "[always:500] a failing row", "[always:malformed] a broken answer",
               "[first:429] retried once"]


def files_under(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        candidates = [root] if root.is_file() else root.rglob("*")
        found += [path for path in candidates if path.is_file()]
    return found


def containing(secrets: Sequence[str], paths: Sequence[Path]) -> list[str]:
    hits = []
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError:  # another session's temporary file, gone since it was listed
            continue
        hits += [f"{path}: {secret}" for secret in secrets if secret.encode() in content]
    return hits


def promptflow_homes() -> list[Path]:
    """Where promptflow keeps its files: our default home and any other it was pointed at."""
    homes = [Path(os.environ.get("PF_HOME_DIRECTORY") or private_home())]
    constants = sys.modules.get("promptflow._sdk._constants")
    if constants is not None:
        homes.append(Path(constants.HOME_PROMPT_FLOW_DIR))
    homes += Path(tempfile.gettempdir()).glob("pytest-promptflow-*")  # sessions' shared folders
    return [home for home in homes if home.exists()]


def test_api_keys_reach_the_endpoint_and_nothing_we_write(
        llm_project: Project, endpoint: FaultEndpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_key, dotenv_key = f"env-key-{uuid.uuid4().hex}", f"dotenv-key-{uuid.uuid4().hex}"
    monkeypatch.setenv("AOAI_API_KEY", env_key)  # the callable's; the connection's comes from .env
    llm_project.write(".env", "aoai=" + json.dumps({"api_key": dotenv_key, "api_base": endpoint.url}) + "\n")
    texts = {name: [f"{t} ({name})" for t in SECRET_ROWS] for name in ("prompty", "dag", "callable")}
    for name, flow_texts in texts.items():
        rows(llm_project, flow_texts, name)
    write_tests(llm_project, case("test_prompty", '"flows/echo.prompty"', "data/prompty.jsonl"),
                case("test_dag", '"flows/echo_dag"', "data/dag.jsonl"),
                case("test_callable", "echo", "data/callable.jsonl"),
                case("test_no_errors", '"flows/echo.prompty"', "data/prompty.jsonl",
                     body='    assert flow_run.metrics["error_rate"] == 0\n'))
    store, junit = tmp_path / "store", llm_project.path / "junit.xml"
    result = run(llm_project.pytester, "--promptflow-llm=record", f"--promptflow-llm-store={store}",
                 f"--junitxml={junit}", "--promptflow-llm-retries=1")
    result.assert_outcomes(passed=3, failed=1)

    sent = {name: {r.headers.get("api-key") for r in endpoint.requests if r.message.endswith(f"({name})")}
            for name in texts}
    assert sent == {"prompty": {dotenv_key}, "dag": {dotenv_key}, "callable": {env_key}}
    assert len(stored(store)) == 3 * 2  # the good rows' answers were recorded...
    assert "gave up after 2 attempts" in junit.read_text()  # ...and the failures reported
    written = files_under(llm_project.path, store, junit, *promptflow_homes())
    assert {llm_project.path / ".env", junit} <= set(written)
    leaks = containing([env_key, dotenv_key], [path for path in written if path != llm_project.path / ".env"])
    assert leaks == []
    assert not [line for line in result.outlines + result.errlines if env_key in line or dotenv_key in line]
