"""``pip install pytest-promptflow`` without the promptflow extra runs a callables project.

For real: a fresh venv (no system site-packages), this checkout installed into it as a user would
(not editable, no extras, every dependency resolved by pip), then ``python -m pytest`` on small
projects in that venv. promptflow must be absent there; callables, evaluators (a function and
azure-ai-evaluation's F1), thresholds and reports must work; a promptflow flow's items fail with
one line each while the rest run. The venv is built once for the module (20-60 s, by the machine's load).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator, Mapping

import pytest
from conftest import MAF_PYTHON, require_second_environment

CHECKOUT = Path(__file__).resolve().parents[1]
#: what building the package reads: a copy of these keeps pip's in-tree build/ out of the checkout
SOURCES = ("pyproject.toml", "README.md", "pytest_promptflow")
MISSING = ("{flow}: flow {name} needs promptflow, which is not installed; "
           "fix: pip install 'pytest-promptflow[promptflow]'")

CAPITALS = [
    {"question": "capital of France", "truth": "paris"},
    {"question": "capital of Italy", "truth": "rome"},
    {"question": "capital of Spain", "truth": "madrid"},
    {"question": "capital of Peru", "truth": "lima"},
]

#: a project of callables only; another flow kind (e.g. a workflow) is one more file and one more test here
CALLABLES = {
    "pytest.ini": "[pytest]\npromptflow_primary_metrics = answer: exact\n",
    "flows/capitals.py": """
        ANSWERS = {"France": "paris", "Italy": "rome", "Spain": "madrid"}


        def answer(question):
            return {"answer": ANSWERS.get(question.split()[-1], "unknown")}
    """,
    "evals/test_capitals.py": """
        import pytest
        from azure.ai.evaluation import F1ScoreEvaluator

        from flows.capitals import answer

        MAPPING = {"answer": "${run.outputs.answer}", "truth": "${data.truth}"}


        def exact(answer, truth):
            return {"exact": float(answer == truth)}


        @pytest.mark.promptflow(flow=answer, data="data/capitals.jsonl")
        def test_capitals(flow_run):
            result = flow_run.evaluate(exact, mapping=MAPPING)
            assert result.metrics["exact"] >= 0.75
            flow_run.evaluate(F1ScoreEvaluator(), mapping={"response": "${run.outputs.answer}",
                                                           "ground_truth": "${data.truth}"})
            flow_run.expect("f1_score >= 0.7")
            flow_run.expect("error_rate <= 0")
    """,
}

#: a DAG flow and a prompty beside a callable: the promptflow flows' items fail, the callable's passes
PROMPTFLOW_FLOWS = {
    "flows/x/flow.dag.yaml": """
        inputs:
          question: {type: string}
        outputs:
          answer: {type: string, reference: "${echo.output}"}
        nodes:
        - name: echo
          type: python
          source: {type: code, path: echo.py}
          inputs: {question: "${inputs.question}"}
    """,
    "flows/x/echo.py": """
        from promptflow.core import tool


        @tool
        def echo(question: str) -> str:
            return question
    """,
    "flows/judge.prompty": """
        ---
        name: judge
        model:
          api: chat
          configuration: {type: azure_openai, azure_deployment: gpt-35-turbo, connection: aoai}
        inputs:
          question: {type: string}
        ---
        system:
        Answer in one word.
        user:
        {{question}}
    """,
    "evals/test_mixed.py": """
        import pytest


        def last_word(question):
            return {"answer": question.split()[-1].lower()}


        @pytest.mark.promptflow(flow="flows/x", data="data/capitals.jsonl")
        def test_dag(flow_run):
            assert flow_run.metrics["error_rate"] == 0


        @pytest.mark.promptflow(flow="flows/judge.prompty", data="data/capitals.jsonl")
        def test_prompty(flow_run):
            assert flow_run.metrics["error_rate"] == 0


        @pytest.mark.promptflow(flow=last_word, data="data/capitals.jsonl")
        def test_callable(flow_run):
            assert flow_run.metrics["error_rate"] == 0
    """,
}


@pytest.fixture(scope="module")
def light_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The python of a fresh venv with this checkout installed without extras (so without promptflow);
    removed afterwards (about 300 MB)."""
    root = tmp_path_factory.mktemp("light")
    source = root / "source"
    shutil.copytree(CHECKOUT, source, ignore=lambda folder, names: [
        name for name in names if Path(folder) == CHECKOUT and name not in SOURCES or name == "__pycache__"])
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = root / "venv" / "bin" / "python"
    # this environment's (current) pip installs into the venv, and compiles no .pyc up front: measured on an idle
    # machine 18 s, against 52 s for ensurepip and the venv's own bundled pip
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-compile",
                           str(source)], env=_clean_environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"pip install pytest-promptflow (no extras) into a fresh venv: {time.monotonic() - started:.0f} s")
    yield python
    shutil.rmtree(root, ignore_errors=True)


def _clean_environment() -> dict[str, str]:
    """This process's environment without what would leak its own packages or settings into the venv's runs."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_", "PROMPTFLOW", "PF_")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


def _write(project: Path, files: Mapping[str, str]) -> None:
    rows = "".join(json.dumps(row) + "\n" for row in CAPITALS)
    for name, text in {"data/capitals.jsonl": rows, **files}.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _pytest(python: Path, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pytest", "evals", "-p", "no:cacheprovider", "-rA",
                           "--promptflow-report", "reports"], cwd=project, env=_clean_environment(),
                          capture_output=True, text=True, timeout=300)


def test_the_venv_has_no_promptflow(light_python: Path) -> None:
    done = subprocess.run([str(light_python), "-c", "import promptflow"], env=_clean_environment(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No module named 'promptflow'" in done.stderr


def test_callables_project_passes_and_writes_its_report(light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, CALLABLES)
    done = _pytest(light_python, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    (cell,) = [cell for flow in json.loads((tmp_path / "reports" / "report.json").read_text())["flows"]
               for cell in flow["cells"]]
    assert cell["metrics"]["exact"] == 0.75
    assert cell["metrics"]["f1_score"] == 0.75  # azure-ai-evaluation's F1, which needs no promptflow
    assert sorted((v["metric"], v["passed"]) for v in cell["verdicts"]) == [
        ("error_rate", True), ("exact", True), ("f1_score", True)]


def test_promptflow_flows_fail_in_one_line_each_and_the_callable_runs(light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, PROMPTFLOW_FLOWS)
    done = _pytest(light_python, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 2 errors" in done.stdout
    assert "PASSED evals/test_mixed.py::test_callable" in done.stdout
    for flow, name in (("flows/x/flow.dag.yaml", "x"), ("flows/judge.prompty", "judge")):
        assert MISSING.format(flow=tmp_path / flow, name=name) in done.stdout.splitlines()
    assert "Traceback" not in done.stdout + done.stderr


#: a workflow (run by the second environment's worker) beside a callable, with no promptflow anywhere
WORKFLOWS = {
    "pytest.ini": f"[pytest]\npromptflow_workflow_python = {MAF_PYTHON}\n",
    "flows/capitals_maf/workflow.py": """
        from agent_framework import Executor, WorkflowBuilder, WorkflowContext, handler

        ANSWERS = {"France": "paris", "Italy": "rome", "Spain": "madrid"}


        class Answer(Executor):
            @handler
            async def answer(self, question: str, ctx: WorkflowContext[str, dict]) -> None:
                await ctx.yield_output({"answer": ANSWERS.get(question.split()[-1], "unknown")})


        def create_workflow():
            return WorkflowBuilder(start_executor=Answer(id="answer")).build()
    """,
    "evals/test_workflow.py": """
        import pytest


        def exact(answer, truth):
            return {"exact": float(answer == truth)}


        @pytest.mark.promptflow(flow="maf:flows/capitals_maf/workflow.py", data="data/capitals.jsonl",
                                mappings={"question": "${data.question}"})
        def test_workflow(flow_run):
            result = flow_run.evaluate(exact, mapping={"answer": "${run.outputs.answer}", "truth": "${data.truth}"})
            assert result.metrics["exact"] == 0.75
    """,
}


def test_workflows_project_passes_without_promptflow(light_python: Path, tmp_path: Path) -> None:
    require_second_environment()
    _write(tmp_path, {**WORKFLOWS, "evals/test_capitals.py": CALLABLES["evals/test_capitals.py"],
                      "flows/capitals.py": CALLABLES["flows/capitals.py"]})
    done = _pytest(light_python, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
