"""agent-framework workflows as flows (``maf:``): run in a worker of the second environment, their LLM calls
answered through the proxy by the session's call layer (store, replay, transcripts), on the embedded model."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import MAF_PYTHON, outcomes, require_second_environment, run

import pytest_promptflow.workflows.workers  # noqa: F401 (kept loaded across in-process runs, as conftest says)
from pytest_promptflow.llm.proxy import LLMProxy
from pytest_promptflow.workflows.client import WORKER

INI = f"[pytest]\npromptflow_workflow_python = {MAF_PYTHON}\n"

#: one executor (id ``answer``) asking the model through agent-framework's chat-completions client, which
#: reads OPENAI_BASE_URL / OPENAI_API_KEY: the session points them at its embedded model
ANSWER_PY = '''\
import os

from agent_framework import Executor, Message, WorkflowBuilder, WorkflowContext, handler
from agent_framework.openai import OpenAIChatCompletionClient


class Answer(Executor):
    def __init__(self, temperature: float) -> None:
        super().__init__(id="answer")
        self.temperature = temperature

    @handler
    async def answer(self, question: str, ctx: WorkflowContext[str, str]) -> None:
        if question == "die":
            os._exit(3)
        client = OpenAIChatCompletionClient(model="gpt-35-turbo")
        response = await client.get_response([Message("user", [f"Answer in one word: {question}"])],
                                             options={"temperature": self.temperature, "max_tokens": 8})
        await ctx.yield_output(response.text)


def create_workflow(temperature: float = 0.0):
    return WorkflowBuilder(start_executor=Answer(temperature)).build()
'''

#: no model: echoes its input, so rows run fast and a row can kill the worker
ECHO_PY = '''\
import asyncio
import os

from agent_framework import Executor, WorkflowBuilder, WorkflowContext, handler


class Echo(Executor):
    def __init__(self, suffix: str) -> None:
        super().__init__(id="echo")
        self.suffix = suffix

    @handler
    async def echo(self, row: dict, ctx: WorkflowContext[str, dict]) -> None:
        if row["text"] == "die":
            os._exit(3)
        print("echoing", row["text"])
        await asyncio.sleep(0.5 if row["text"] == "hi" else 0)  # the first row answers last
        await ctx.yield_output({"echo": row["text"].upper() + self.suffix})


def create_workflow(suffix: str = ""):
    return WorkflowBuilder(start_executor=Echo(suffix)).build()
'''

QUESTIONS = [{"question": "What color is the sky?"}, {"question": "What is 2+2?"}]

ANSWER_TEST = '''\
import pytest


def words(output):
    return {"words": len(output.split())}


@pytest.mark.promptflow(flow="maf:flows/qa_maf/workflow.py:create_workflow", data="data/qa.jsonl",
                        mappings={"question": "${data.question}"}, overrides={"temperature": [0.0, 0.7]})
def test_answers(flow_run):
    assert flow_run.metrics["error_rate"] <= 0, [row.error_message for row in flow_run.rows]
    result = flow_run.evaluate(words, mapping={"output": "${run.outputs.output}"})
    assert result.metrics["words"] >= 1
'''


@pytest.fixture(autouse=True)
def second_environment(_promptflow_loaded: None) -> None:
    require_second_environment()


def write(pytester: pytest.Pytester, files: dict[str, str], rows: dict[str, list[dict]], ini: str = INI) -> None:
    pytester.makefile(".ini", pytest=ini)
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, found in rows.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in found))


def workers_in(folder: Path) -> list[psutil.Process]:
    """Workflow worker processes started for the project in ``folder``, still running."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        if str(WORKER) in (process.info["cmdline"] or ()) and process.info["cwd"] == str(folder):
            found.append(process)
    return found


def report_cells(folder: Path) -> dict[str, dict]:
    document = json.loads((folder / "report.json").read_text())
    return {cell["config"]: cell for flow in document["flows"] for cell in flow["cells"]}


def report_rows(folder: Path) -> dict[str, list[dict]]:
    return {config: cell["rows"] for config, cell in report_cells(folder).items()}


def test_a_workflow_runs_per_factory_argument_with_its_calls_stored_then_replayed_without_the_model(
        pytester: pytest.Pytester) -> None:
    write(pytester, {"flows/qa_maf/workflow.py": ANSWER_PY, "evals/test_qa.py": ANSWER_TEST},
          {"data/qa.jsonl": QUESTIONS})
    result = run(pytester, "evals", "-v", "--promptflow-report", "reports")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_answers?qa_maf-temperature=0.0-qa? PASSED*",
                                 "*test_answers?qa_maf-temperature=0.7-qa? PASSED*"])
    rows = report_rows(pytester.path / "reports")
    assert sorted(rows) == ["temperature=0.0", "temperature=0.7"]
    assert all(row["scores"]["words.words"] >= 1 for found in rows.values() for row in found)  # evaluated
    module = pytester.path / "flows" / "qa_maf" / "workflow.py"
    cells = report_cells(pytester.path / "reports").values()
    assert {cell["flow_source"] for cell in cells} == {f"maf:{module}:create_workflow"}  # what a release loads
    assert all(cell["flow_hash"] for cell in cells)
    calls = [call for found in rows.values() for row in found for call in row["calls"]]
    assert len(calls) == 4 and {call["node"] for call in calls} == {"answer"}
    assert {call["from_store"] for call in calls} == {False}
    assert {call["parameters"]["temperature"] for call in calls} == {0.0, 0.7}  # the factory argument, sent

    replayed = run(pytester, "evals", "--promptflow-llm=replay", "--promptflow-report", "replayed")
    assert outcomes(replayed) == {"passed": 2}, replayed.stdout.str()
    calls = [call for found in report_rows(pytester.path / "replayed").values() for row in found
             for call in row["calls"]]
    assert len(calls) == 4 and {call["from_store"] for call in calls} == {True}
    replayed.stdout.fnmatch_lines(["*4 LLM calls (replay mode*0 live, 4 from store*"])


def test_an_experiment_yaml_names_a_workflow_whose_rows_run_at_once_and_come_back_in_order(
        pytester: pytest.Pytester) -> None:
    experiment = ("name: echo\nflow: maf:../../flows/echo/workflow.py\ndatasets:\n- name: words\n"
                  "  source: words.jsonl\nvariants:\n  overrides:\n    suffix: ['', '!']\n"
                  "thresholds:\n  error_rate: '<= 0'\n")
    write(pytester, {"flows/echo/workflow.py": ECHO_PY, "evals/echo/experiment.yaml": experiment},
          {"evals/echo/words.jsonl": [{"text": "hi"}, {"text": "yo"}]})
    result = run(pytester, "evals", "-v", "--promptflow-report", "reports")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["*echo-suffix=-words* PASSED*", "*echo-suffix=_*-words* PASSED*"])
    rows = report_rows(pytester.path / "reports")
    outputs = {config: [row["outputs"]["echo"] for row in found] for config, found in rows.items()}
    assert sorted(outputs.values()) == [["HI", "YO"], ["HI!", "YO!"]]  # a dict start: the whole row, in order
    assert not workers_in(pytester.path)  # stopped with the session
    assert "echoing yo" in (pytester.path / "reports" / "promptflow.log").read_text()  # its prints: in the log


#: a plain test collected before the workflow's items: it writes how many workflow workers of this project run
FIRST_TEST = f"""\
from pathlib import Path

import psutil


def test_first():
    workers = [process for process in psutil.process_iter(["cmdline", "cwd"])
               if {str(WORKER)!r} in (process.info["cmdline"] or ()) and process.info["cwd"] == str(Path.cwd())]
    Path("workers_seen").write_text(str(len(workers)))
"""


def test_the_worker_starts_before_the_first_item_when_a_selected_item_runs_a_workflow(
        pytester: pytest.Pytester) -> None:
    experiment = ("name: echo\nflow: maf:../../flows/echo/workflow.py\ndatasets:\n- name: words\n"
                  "  source: words.jsonl\nthresholds:\n  error_rate: '<= 0'\n")
    write(pytester, {"flows/echo/workflow.py": ECHO_PY, "evals/echo/experiment.yaml": experiment,
                     "evals/a_first/test_first.py": FIRST_TEST}, {"evals/echo/words.jsonl": [{"text": "yo"}]})
    result = run(pytester, "evals", "-v")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_first.py::test_first PASSED*", "*echo-words* PASSED*"])
    assert (pytester.path / "workers_seen").read_text() == "1"  # started while the first item ran
    assert not workers_in(pytester.path)

    result = run(pytester, "evals", "-k", "first")  # the workflow's item deselected: no worker
    assert outcomes(result) == {"passed": 1, "deselected": 1}, result.stdout.str()
    assert (pytester.path / "workers_seen").read_text() == "0"


def test_a_worker_that_dies_fails_its_row_in_one_line_and_the_next_row_restarts_it(
        pytester: pytest.Pytester) -> None:
    experiment = ("name: echo\nflow: maf:../../flows/echo/workflow.py:create_workflow\ndatasets:\n- name: words\n"
                  "  source: words.jsonl\nthresholds:\n  error_rate: '<= 0'\n")
    write(pytester, {"flows/echo/workflow.py": ECHO_PY, "evals/echo/experiment.yaml": experiment},
          {"evals/echo/words.jsonl": [{"text": "hi"}, {"text": "die"}, {"text": "yo"}]})
    result = run(pytester, "evals", "--promptflow-concurrency", "1", "--promptflow-report", "reports")
    assert outcomes(result) == {"failed": 1}, result.stdout.str()
    [rows] = report_rows(pytester.path / "reports").values()
    assert [row["outputs"] for row in rows] == [{"echo": "HI"}, None, {"echo": "YO"}]
    error = rows[1]["error"]
    assert "WorkerExited" in json.dumps(error) and "exited with code 3" in json.dumps(error), error


#: a workflow's item and a callable's, side by side
BOTH_TEST = '''\
import pytest


def shout(text):
    return text.upper()


@pytest.mark.promptflow(flow="maf:flows/echo/workflow.py", data="data/words.jsonl")
def test_workflow(flow_run):
    pass


@pytest.mark.promptflow(flow=shout, data="data/words.jsonl")
def test_callable(flow_run):
    assert flow_run.metrics["error_rate"] == 0
'''


def test_no_second_environment_fails_only_that_flows_items_in_one_line(pytester: pytest.Pytester) -> None:
    write(pytester, {"flows/echo/workflow.py": ECHO_PY, "evals/test_both.py": BOTH_TEST},
          {"data/words.jsonl": [{"text": "hi"}]}, ini="[pytest]\n")
    result = run(pytester, "evals", "-p", "no:randomly")
    assert outcomes(result) in ({"passed": 1, "errors": 1}, {"passed": 1, "failed": 1}), result.stdout.str()
    result.stdout.fnmatch_lines(["*flow echo: agent-framework is not installed beside this session and no second "
                                 "environment was found; fix: run `pytest-promptflow env maf` or set "
                                 "promptflow_workflow_python*"])
    assert "Traceback" not in result.stdout.str()


def test_a_workflow_python_that_cannot_start_fails_only_that_flows_items_in_one_line(
        pytester: pytest.Pytester) -> None:
    """Found but not runnable (not executable): the early start leaves it to the item, which says why."""
    (pytester.path / "not-a-python").write_text("#!/bin/sh\n")
    write(pytester, {"flows/echo/workflow.py": ECHO_PY, "evals/test_both.py": BOTH_TEST},
          {"data/words.jsonl": [{"text": "hi"}]}, ini="[pytest]\npromptflow_workflow_python = not-a-python\n")
    result = run(pytester, "evals", "-p", "no:randomly")
    assert outcomes(result) in ({"passed": 1, "errors": 1}, {"passed": 1, "failed": 1}), result.stdout.str()
    result.stdout.fnmatch_lines(["*flow echo: *Permission denied*; fix: check that its Python runs*"])
    assert "Traceback" not in result.stdout.str()


def test_a_factory_or_a_module_that_does_not_exist_is_one_line(pytester: pytest.Pytester) -> None:
    write(pytester, {"flows/echo/workflow.py": ECHO_PY, "evals/test_missing.py": '''\
import pytest


@pytest.mark.promptflow(flow="maf:flows/echo/workflow.py:make_it", data="data/words.jsonl")
def test_workflow(flow_run):
    pass


@pytest.mark.promptflow(flow="maf:flows/gone/workflow.py", data="data/words.jsonl")
def test_gone(flow_run):
    pass
''', "evals/gone/experiment.yaml": "name: gone\nflow: maf:../../flows/gone.py:make\ndatasets:\n- name: words\n"
                                     "  source: ../../data/words.jsonl\n"}, {"data/words.jsonl": [{"text": "hi"}]})
    result = run(pytester, "evals")
    result.stdout.fnmatch_lines_random([
        "*flows/echo/workflow.py: has no make_it; fix: *",
        "*evals/test_missing.py:*: flow 'maf:flows/gone/workflow.py': workflow module */flows/gone/workflow.py not "
        "found; give the .py file that defines the factory, e.g. *",
        "*evals/gone/experiment.yaml:2: flow 'maf:../../flows/gone.py:make': workflow module */flows/gone.py not "
        "found; give the .py file *"])
    assert "Traceback" not in result.stdout.str()


def test_the_proxy_refuses_what_is_not_a_forwarded_request() -> None:
    proxy = LLMProxy()
    url = {"X-Pytest-Promptflow-Url": "http://example.invalid/x"}
    origin = proxy.address.rsplit("/", 1)[0]  # the proxy's address ends in the session's token
    try:
        for address, headers in ((proxy.address + "/other", url), (proxy.address + "/forward", {}),
                                 (origin + "/forward", url), (origin + "/guessed-token/forward", url)):
            request = urllib.request.Request(address, data=b"{}", headers=headers)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 404
    finally:
        proxy.stop()


def test_env_maf_creates_a_working_environment_and_a_second_call_finds_it_ready(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "pytest_promptflow.cli", "env", "maf", "--path", str(tmp_path / "maf")]
    made = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0 and "created" in made.stdout, made.stderr
    python = tmp_path / "maf" / "bin" / "python"
    check = subprocess.run([str(python), "-c", "from agent_framework.openai import OpenAIChatCompletionClient"])
    assert check.returncode == 0
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "found ready" in again.stdout


def test_the_workflow_python_is_the_ini_ones_then_the_projects_second_environment(tmp_path: Path) -> None:
    from pytest_promptflow.errors import SpecError
    from pytest_promptflow.workflows.python import find_python

    with pytest.raises(SpecError, match=r"flow qa: promptflow_workflow_python = envs/py does not exist \(looked "
                                        rf"for {tmp_path}/envs/py\); fix: point promptflow_workflow_python at"):
        find_python(tmp_path, "envs/py", "qa")
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "py").touch()
    assert find_python(tmp_path, "envs/py", "qa") == str(tmp_path / "envs" / "py")  # relative to the rootdir
    default = tmp_path / ".promptflow-envs" / "maf" / "bin" / "python"
    default.parent.mkdir(parents=True)
    default.touch()
    assert find_python(tmp_path, "", "qa") == str(default)


def test_a_workflows_fingerprint_is_its_modules_folder_so_a_kept_cell_knows_it_changed(tmp_path: Path) -> None:
    from pytest_promptflow.reporting.history import flow_hash

    module = tmp_path / "flows" / "echo" / "workflow.py"
    module.parent.mkdir(parents=True)
    module.write_text(ECHO_PY)
    source = f"maf:{module}:create_workflow"
    before = flow_hash(source)
    assert before and flow_hash(f"maf:{module}") == before
    (module.parent / "prompts.txt").write_text("a file beside it")
    assert flow_hash(source) not in ("", before)
    module.unlink()
    assert flow_hash(source) == ""
