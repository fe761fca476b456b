"""Parity as a test: ``twin=`` runs a migrated twin on a cell's rows and checks requests, outputs, metrics,
errors, latency and cost; ``twin_of=`` checks a flow against a stored report's rows.

The original is a DAG flow whose LLM node reaches a real local endpoint (fault_endpoint.py) through our call
layer, so each row's requests are transcribed; its twins are a DAG, a flex flow, a callable and an agent-framework
workflow (``maf:``, run by a worker of the second environment, its calls through the session's proxy). The checks'
arithmetic is tested on plain versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
from conftest import SECOND_ENV, Project, jsonl, outcomes, require_second_environment, run
from fault_endpoint import FaultEndpoint
from llm_variants import SYSTEM, write_flows

from pytest_promptflow.pairing import ScoredRow, Side
from pytest_promptflow.parity import Version, VersionRow, first_difference, parity, word_diff
from pytest_promptflow.twin import requests_unseen

ROWS = [{"id": "r1", "text": "a good day"}, {"id": "r2", "text": "a bad day"}, {"id": "r3", "text": "awful service"}]

#: a twin's entry: the original's request (system message, temperature 0.0, max_tokens 20) under another
#: deployment name; ``{system}`` and ``{fail}`` make the reworded and the failing twins
TWIN_ENTRY = '''\
import os

import openai


def classify(text: str) -> dict:
    {fail}
    client = openai.AzureOpenAI(api_key=os.environ["AOAI_API_KEY"], azure_endpoint=os.environ["AOAI_API_BASE"],
                                api_version="2024-02-01", max_retries=0)
    reply = client.chat.completions.create(
        model="migrated-deployment", temperature=0.0, max_tokens=20,
        messages=[{{"role": "system", "content": {system!r}}}, {{"role": "user", "content": text}}])
    return {{"category": reply.choices[0].message.content}}
'''
FAIL_ON_AWFUL = 'if "awful" in text:\n        raise ValueError("the twin cannot say awful")'

TWIN_DAG = """\
inputs:
  text:
    type: string
outputs:
  category:
    type: string
    reference: ${ask.output}
nodes:
- name: ask
  type: llm
  source:
    type: code
    path: ask.jinja2
  inputs:
    deployment_name: migrated-deployment
    temperature: 0.0
    max_tokens: 20
    text: ${inputs.text}
  provider: AzureOpenAI
  connection: aoai
  api: chat
"""

TEST_FILE = '''
import pytest

{imports}


def words(category):
    return {{"words": len(category.split()) / 10}}


@pytest.mark.promptflow(flow="flows/clf", data="data/rows.jsonl", {twin})
def test_parity(flow_run):
    flow_run.evaluate(words, mapping={{"category": "${{run.outputs.category}}"}})
'''


#: the same request from an agent-framework workflow, through its chat-completions client over openai's Azure client
MAF_TWIN = '''\
import os

from agent_framework import Executor, Message, WorkflowBuilder, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient
from openai import AsyncAzureOpenAI


class Ask(Executor):
    @handler
    async def ask(self, text: str, ctx: WorkflowContext[str, dict]) -> None:
        azure = AsyncAzureOpenAI(api_key=os.environ["AOAI_API_KEY"], azure_endpoint=os.environ["AOAI_API_BASE"],
                                 api_version="2024-02-01", max_retries=0)
        client = OpenAIChatCompletionClient(model="migrated-deployment", async_client=azure)
        reply = await client.get_response([Message("system", [{system!r}]), Message("user", [text])],
                                          options={{"temperature": 0.0, "max_tokens": 20}})
        await ctx.yield_output({{"category": reply.text}})


def create_workflow():
    return WorkflowBuilder(start_executor=Ask(id="ask")).build()
'''


def twin_entry(system: str = SYSTEM["variant_0"], fail: str = "") -> str:
    return TWIN_ENTRY.format(system=system, fail=fail or "pass")


def dag_twin(project: Project) -> str:
    project.write("flows/migrated/flow.dag.yaml", TWIN_DAG)
    project.write("flows/migrated/ask.jinja2", f"# system:\n{SYSTEM['variant_0']}\n\n# user:\n{{{{text}}}}\n")
    return 'twin="flows/migrated"'


def flex_twin(project: Project, **entry: str) -> str:
    project.write("flows/migrated/flow.flex.yaml", "entry: migrated:classify\n")
    project.write("flows/migrated/migrated.py", twin_entry(**entry))
    return 'twin="flows/migrated"'


def callable_twin(project: Project, **entry: str) -> str:
    project.write("migrated.py", twin_entry(**entry))
    return "twin=classify"


def maf_twin(project: Project, system: str = SYSTEM["variant_0"]) -> str:
    require_second_environment()
    (project.path / ".promptflow-envs").symlink_to(SECOND_ENV.parent)  # where the session looks for it
    project.write("flows/migrated/workflow.py", MAF_TWIN.format(system=system))
    return 'twin="maf:flows/migrated/workflow.py:create_workflow"'


#: how each kind of twin is written into the project; returns the marker's twin argument
TWINS: dict[str, Callable[..., str]] = {"dag": dag_twin, "flex": flex_twin, "callable": callable_twin,
                                        "maf": maf_twin}


@pytest.fixture
def endpoint() -> Iterator[FaultEndpoint]:
    with FaultEndpoint() as server:
        yield server


@pytest.fixture
def llm_project(project: Project, endpoint: FaultEndpoint, monkeypatch: pytest.MonkeyPatch) -> Project:
    """flows/clf (an LLM DAG at the endpoint) and data/rows.jsonl with ids r1-r3."""
    write_flows(project, endpoint, monkeypatch)
    project.data("rows", ROWS)
    return project


def write_test(project: Project, twin: str) -> None:
    imports = "from migrated import classify" if twin == "twin=classify" else ""
    project.pytester.makepyfile(test_parity=TEST_FILE.format(twin=twin, imports=imports))


def report(project: Project, folder: str = "out") -> dict[str, Any]:
    (cell,) = [cell for flow in json.loads((project.path / folder / "report.json").read_text())["flows"]
               for cell in flow["cells"] if cell.get("parity")]
    return cell


@pytest.mark.parametrize("kind", list(TWINS))
def test_an_equivalent_twin_of_each_kind_passes_every_check(llm_project: Project, endpoint: FaultEndpoint,
                                                            kind: str) -> None:
    write_test(llm_project, TWINS[kind](llm_project))
    result = run(llm_project.pytester, "--promptflow-report", "out")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines([
        "promptflow: cell clf-rows: parity of flow clf with twin * holds",
        "  request parity: the same requests on all 3 rows",
        "  outputs agree on 3 of 3 rows (100%)",
        "  words ~= twin ± 0.03 at 95%: difference +0.00 [+0.00, +0.00] on 3 rows",
        "  errors: the original failed 0 of 3 rows, the twin 0 of 3",
        "  latency p50/p95: original *s/*s, twin *; cost: original 0.0000, twin 0.0000",
    ])
    parity = report(llm_project)["parity"]
    assert parity["passed"] and parity["request"]["rows"] == 3 and parity["request"]["differing"] == 0
    assert parity["outputs"]["agreement"] == 1.0
    assert [(m["metric"], m["low"], m["high"]) for m in parity["equivalence"]] == [("words", 0.0, 0.0)]
    # the twin named another deployment: the model is not compared (nor was it sent to the store's same entry)
    assert {r.body["messages"][0]["content"] for r in endpoint.requests} == {SYSTEM["variant_0"]}


@pytest.mark.parametrize("kind", ["flex", "maf"])
def test_a_twin_with_another_prompt_fails_request_parity_with_the_diff(llm_project: Project, kind: str) -> None:
    write_test(llm_project, TWINS[kind](llm_project, system="Answer with <b>a single</b> word: positive or negative."))
    result = run(llm_project.pytester, "--promptflow-report", "out")
    assert outcomes(result) == {"failed": 1}
    failure = result.stdout.str().partition("promptflow: flow clf")[0].partition("test_parity[clf-rows] _")[2]
    assert failure.splitlines()[1:3] == [
        "cell clf-rows: parity of flow clf with twin migrated fails:",
        "  request parity: 3 of 3 rows differ; first: row r1, call 1: messages: system: Answer with "
        "[-one-]{+<b>a single</b>+} word: positive or negative. user: a good day"]
    assert "outputs agree" not in failure and "words ~=" not in failure  # reported, not failing
    request = report(llm_project)["parity"]["request"]
    assert (request["differing"], request["first"]["row"], request["first"]["call"]) == (3, "r1", 1)
    assert ["del", "system: Answer with one word: positive or negative."] in request["first"]["diff"]
    assert ["ins", "system: Answer with <b>a single</b> word: positive or negative."] in request["first"]["diff"]
    html = (llm_project.path / "out" / "report.html").read_text()
    assert "Parity of flow clf with twin migrated" in html and "<del>- system: Answer with one word" in html
    assert "<ins>+ system: Answer with &lt;b&gt;a single&lt;/b&gt; word" in html and "<b>a single" not in html


def test_a_twin_failing_rows_fails_parity_and_keeps_every_row(llm_project: Project) -> None:
    write_test(llm_project, callable_twin(llm_project, fail=FAIL_ON_AWFUL))
    result = run(llm_project.pytester, "--promptflow-report", "out")
    assert outcomes(result) == {"failed": 1}
    result.stdout.fnmatch_lines([
        "*parity of flow clf with twin classify fails:",
        "*  words ~= twin ± 0.03 at 95%: difference -0.10 ?-0.53, +0.33? on 3 rows; the difference itself is past "
        "±0.03",
        "*  errors: the original failed 0 of 3 rows, the twin 1 of 3; the twin failed 1 row the original passed: "
        "r3 (ValueError: the twin cannot say awful)",
    ])
    parity = report(llm_project)["parity"]
    assert parity["errors"]["twin_only"] == [{"row": "r3", "error": "ValueError: the twin cannot say awful"}]
    assert parity["request"]["rows"] == 2 and parity["request"]["skipped"] == 1  # the failed row: the error check's
    assert parity["outputs"]["rows"] == 3 and parity["equivalence"][0]["n"] == 3  # no row dropped


def test_against_a_deployments_answers_request_parity_is_not_checked_and_the_rest_is(llm_project: Project) -> None:
    """The endpoint test judges a deployment's answers: its LLM requests are not seen here, so they are not
    compared with the twin's (which would fail every row: 0 calls against 1); scores and errors still are."""
    write_test(llm_project, callable_twin(llm_project))
    first = run(llm_project.pytester, "--promptflow-report", "out")
    assert outcomes(first) == {"passed": 1}, first.stdout.str()
    rows = [row for flow in json.loads((llm_project.path / "out" / "report.json").read_text())["flows"]
            if flow["flow"] == "clf" for cell in flow["cells"] for row in cell["rows"]]
    answers = [{"inputs": row["inputs"], "outputs": row["outputs"], "error": None, "latency": 0.2} for row in rows]
    llm_project.write("answers.json", json.dumps({"rows": 0, "flows": {"clf": {"rows": answers}}}))

    result = run(llm_project.pytester, "--promptflow-report", "endpoint", "--promptflow-endpoint-answers",
                 str(llm_project.path / "answers.json"))
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines([
        "promptflow: cell clf-rows: parity of flow clf with twin classify holds",
        "  request parity: not checked (clf's rows are its deployment's answers: its LLM requests are not seen here)",
        "  outputs agree on 3 of 3 rows (100%)",
        "  errors: the original failed 0 of 3 rows, the twin 0 of 3"], consecutive=False)
    request = report(llm_project, "endpoint")["parity"]["request"]
    assert request["passed"] and request["differing"] is None and request["unseen"].startswith("clf's rows")


def test_rows_of_a_remote_run_leave_request_parity_unchecked_and_say_where_they_ran() -> None:
    planned = SimpleNamespace(target=SimpleNamespace(name="clf"), cell=SimpleNamespace(dataset=SimpleNamespace(
        name="rows")))
    session = SimpleNamespace(answers=None)
    assert requests_unseen(session, planned, SimpleNamespace(elsewhere="azureml run r1")) == \
        "clf's rows ran in azureml run r1"
    assert requests_unseen(session, planned, SimpleNamespace(elsewhere="")) == ""


def test_experiment_yaml_declares_a_twin(llm_project: Project) -> None:
    flex_twin(llm_project, system="Answer with a single word: positive or negative.")
    llm_project.write("flows/words/flow.flex.yaml", "entry: words:words\n")
    llm_project.write("flows/words/words.py", "def words(category: str) -> dict:\n"
                      "    return {'words': len(category.split()) / 10}\n")
    llm_project.experiment("""\
        name: clf
        flow: ../flows/clf
        twin: ../flows/migrated
        datasets:
        - name: rows
          source: ../data/rows.jsonl
          mappings:
            text: "${data.text}"
        evaluators:
        - name: words
          flow: ../flows/words
          datasets:
          - name: rows
            mappings:
              category: "${run.outputs.category}"
        variants:
          strategy: defaults
        """)
    result = run(llm_project.pytester, "--promptflow-report", "out")
    assert outcomes(result) == {"failed": 1}
    result.stdout.fnmatch_lines(["*request parity: 3 of 3 rows differ; first: row r1*"])
    assert [m["metric"] for m in report(llm_project)["parity"]["equivalence"]] == ["words"]


def test_a_twin_checked_against_a_stored_reports_rows(llm_project: Project, endpoint: FaultEndpoint) -> None:
    """The original ran once and left report.json; later only the twin runs, against those stored rows."""
    llm_project.pytester.makepyfile(test_parity=TEST_FILE.format(twin="", imports=""))
    assert outcomes(run(llm_project.pytester, "--promptflow-report", "released")) == {"passed": 1}
    callable_twin(llm_project)
    (llm_project.path / "test_parity.py").unlink()
    llm_project.pytester.makepyfile(test_twin_of='''
        import pytest

        from migrated import classify


        def words(category):
            return {"words": len(category.split()) / 10}


        def chars(category):  # not in the stored report: its stored outputs are scored afresh
            return {"chars": len(category) / 100}


        @pytest.mark.promptflow(flow=classify, data="data/rows.jsonl", twin_of="released#clf")
        def test_parity(flow_run):
            flow_run.evaluate(words, mapping={"category": "${run.outputs.category}"})
            flow_run.evaluate(chars, mapping={"category": "${run.outputs.category}"})
    ''')
    endpoint.reset()
    result = run(llm_project.pytester, "--promptflow-report", "out")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines([
        "promptflow: cell classify-rows: parity of stored flow clf (defaults in report.json) with twin "
        "classify holds",
        "  request parity: the same requests on all 3 rows",
    ])
    parity = report(llm_project)["parity"]
    assert parity["passed"] and [(m["metric"], m["n"]) for m in parity["equivalence"]] == [("words", 3), ("chars", 3)]
    assert len(endpoint.requests) == 3  # the twin's rows; the original did not run again


def test_reading_a_stored_original_imports_no_promptflow(tmp_path: Path) -> None:
    """The twin_of path (report.json in, parity out) works where promptflow is not installed."""
    cell = {"dataset": "rows", "config": "defaults", "rows": [
        {"id": "r1", "repeat": 0, "outputs": {"category": "x"}, "error": None, "scores": {"words.words": 0.2},
         "calls": [{"evaluator": None, "messages": [{"role": "user", "content": "hi"}], "parameters": {}}]}]}
    (tmp_path / "report.json").write_text(json.dumps({"flows": [{"flow": "clf", "best": "defaults",
                                                                 "cells": [cell]}]}))
    script = textwrap.dedent(f"""
        import json
        import sys
        from pathlib import Path
        from types import SimpleNamespace

        from pytest_promptflow.twin import parse_twin, stored_original
        from pytest_promptflow.parity import parity, version_of_cell

        spec = parse_twin(None, "report.json#clf", Path({str(tmp_path)!r}), None)
        planned = SimpleNamespace(cell=SimpleNamespace(dataset=SimpleNamespace(name="rows")),
                                  target=SimpleNamespace(name="twin"))
        twin = version_of_cell("twin", json.loads({json.dumps(cell)!r}))
        original = stored_original(spec, planned, None, twin, None)
        assert parity(original, twin, 0.03).record()["request"]["differing"] == 0
        print(sorted(name for name in sys.modules if name.split(".")[0] == "promptflow"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the checks on plain versions -------------------------------------------------------------------------------


def version(label: str, scores: list[float], errors: tuple[int, ...] = (), calls: Any = ()) -> Version:
    rows = tuple(VersionRow(f"r{i}", 0, "E: x" if i in errors else None, {"a": str(i)}, tuple(calls), 0.1)
                 for i in range(len(scores)))
    side = Side(label, tuple(ScoredRow(f"r{i}", {"ev.score": s}, i in errors) for i, s in enumerate(scores)))
    return Version(label, rows, side)


def test_an_interval_too_wide_for_the_margin_is_underpowered_and_says_the_rows_it_needs() -> None:
    checked = parity(version("a", [1.0, 0.0] * 10), version("b", [1.0, 0.0] * 10), 0.03)
    (metric,) = checked.record()["equivalence"]
    assert not checked.passed and metric["underpowered"]
    assert metric["line"] == (f"score ~= twin ± 0.03 at 95%: difference +0.00 [{metric['low']:+.2f}, "
                              f"{metric['high']:+.2f}] on 20 rows; underpowered: the interval is wider than ±0.03 "
                              f"allows (about {metric['rows_needed']} rows would do at this spread)")
    assert metric["rows_needed"] > 100
    roomy = parity(version("a", [1.0, 0.0] * 10), version("b", [1.0, 0.0] * 10), 0.2)
    assert roomy.passed, roomy.failures


def test_parameters_compare_as_the_api_reads_them_and_the_model_not_at_all() -> None:
    def call(model: str, **parameters: Any) -> dict[str, Any]:
        return {"model": model, "messages": [{"role": "user", "content": "hi"}], "parameters": parameters}

    same = [call("gpt-35-turbo", temperature=1, top_p=1.0, stop=[], max_tokens=5)]
    assert first_difference(same, [call("gpt-4o", max_completion_tokens=5)]) == {}
    found = first_difference(same, [call("gpt-4o", max_tokens=5, temperature=0.7)])
    assert found["summary"] == "call 1: temperature 1.0 != 0.7" and found["parameters"] == {"temperature": [1.0, 0.7]}
    assert first_difference(same, same * 2)["summary"] == "the original made 1 LLM call, the twin 2"


def test_a_word_diff_marks_the_changed_words_in_context() -> None:
    assert word_diff("system: Answer with one word please", "system: Answer with a single word please") == \
        "system: Answer with [-one-]{+a single+} word please"


def test_output_agreement_and_latency_are_reported_not_gated() -> None:
    original, twin = version("a", [0.5] * 4), version("b", [0.5] * 4)
    twin = Version("b", tuple(VersionRow(r.identity, 0, None, {"a": "other"}, (), 9.0) for r in twin.rows),
                   twin.scores)
    checked = parity(original, twin, 0.03)
    assert checked.passed
    outputs = checked.record()["outputs"]
    assert outputs["line"].startswith("outputs agree on 0 of 4 rows (0%); first disagreeing: row r0")
    assert checked.record()["spend"]["twin"]["p95"] == 9.0


def test_the_twin_failing_a_row_the_original_failed_too_is_at_parity() -> None:
    checked = parity(version("a", [0.5, 0.0], errors=(1,)), version("b", [0.5, 0.0], errors=(1,)), 0.03)
    assert checked.record()["errors"]["passed"]


@pytest.mark.parametrize("rows", [[{"id": "r1", "text": "x"}]])
def test_twin_and_twin_of_together_is_one_line(project: Project, rows: list[dict[str, Any]]) -> None:
    project.write("data/rows.jsonl", jsonl(rows))
    project.pytester.makepyfile(test_both='''
        import pytest


        def echo(text):
            return {"out": text}


        @pytest.mark.promptflow(flow=echo, data="data/rows.jsonl", twin=echo, twin_of="nowhere")
        def test_both(flow_run):
            pass
    ''')
    result = run(project.pytester)
    assert outcomes(result) == {"errors": 1}
    result.stdout.fnmatch_lines(["*test_both.py:*: twin and twin_of are both given; twin= names the migrated flow*"])


def test_a_twin_that_is_not_there_is_one_line_and_the_other_tests_run(project: Project) -> None:
    project.data("rows", [{"id": "r1", "text": "x"}])
    project.pytester.makepyfile(test_missing='''
        import pytest


        def echo(text):
            return {"out": text}


        @pytest.mark.promptflow(flow=echo, data="data/rows.jsonl", twin="flows/nowhere")
        def test_missing(flow_run):
            pass


        @pytest.mark.promptflow(flow=echo, data="data/rows.jsonl")
        def test_other(flow_run):
            pass
    ''')
    result = run(project.pytester)
    assert outcomes(result) == {"passed": 1, "errors": 1}
    result.stdout.fnmatch_lines(["*test_missing.py:*: flow 'flows/nowhere' not found (looked for *nowhere); give a "
                                 "flow folder*"])


def test_twin_of_names_what_it_cannot_find_in_one_line(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pytest_promptflow.errors import SpecError
    from pytest_promptflow.twin import parse_twin, stored_original

    with pytest.raises(SpecError, match=r"twin_of .reports.: no report.json at .*/reports; point twin_of"):
        parse_twin(None, "reports", tmp_path, None)
    cell = {"dataset": "rows", "config": "defaults", "rows": [{"id": "r1", "outputs": {}, "scores": {}}]}
    document = {"flows": [{"flow": "a", "cells": [cell]}, {"flow": "b", "cells": [cell, dict(cell, config="x")]}]}
    (tmp_path / "report.json").write_text(json.dumps(document))
    planned = SimpleNamespace(cell=SimpleNamespace(dataset=SimpleNamespace(name="rows")),
                              target=SimpleNamespace(name="twin"))
    twin = Version("twin", (), Side("twin", ()))
    for text, message in [("report.json", "2 flows of the report have rows of dataset rows; name one: "
                                          "report.json#<flow>, one of a, b"),
                          ("report.json#c", "no flow c with rows of dataset rows; its flows with rows of rows: a, b"),
                          ("report.json#b", "flow b has 2 configurations with rows of dataset rows; name one as "
                                            "#b:<configuration>, one of: defaults, x")]:
        with pytest.raises(SpecError) as raised:
            stored_original(parse_twin(None, text, tmp_path, None), planned, None, twin, None)
        assert message in str(raised.value)
    chosen = stored_original(parse_twin(None, "report.json#b:x", tmp_path, None), planned, None, twin, None)
    assert chosen.label == "stored flow b (x in report.json)"


def test_a_failing_test_body_keeps_its_failure_and_the_parity_still_reaches_the_report(project: Project) -> None:
    project.data("rows", [{"id": "r1", "text": "x"}, {"id": "r2", "text": "y"}])
    project.pytester.makepyfile(test_body='''
        import pytest


        def echo(text):
            return {"out": text}


        def shout(text):
            return {"out": text.upper()}


        @pytest.mark.promptflow(flow=echo, data="data/rows.jsonl", twin=shout)
        def test_body(flow_run):
            assert False, "the body's own failure"
    ''')
    result = run(project.pytester, "--promptflow-report", "out")
    assert outcomes(result) == {"failed": 1}
    result.stdout.fnmatch_lines(["*AssertionError: the body's own failure"])
    assert "parity of flow echo with twin shout fails" not in result.stdout.str()
    assert report(project)["parity"]["outputs"]["agreeing"] == 0
    # from an xdist worker the parity crosses to the controller on the item's record
    parallel = project.pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--promptflow-report", "xd")
    assert outcomes(parallel) == {"failed": 1}
    timeless = [{k: v for k, v in report(project, folder)["parity"].items() if k not in ("spend", "lines")}
                for folder in ("out", "xd")]
    assert timeless[0] == timeless[1] and timeless[0]["outputs"]["rows"] == 2
