"""``--promptflow-backend azureml``, against ``FakePFClient`` at the SDK boundary (this machine cannot reach Azure).

What our backend sends is promptflow's real ``Run`` entity, checked as the SDK checks it before submitting; the
workspace is azure-ai-ml's real ``MLClient`` that the backend builds from the options. Only the client that would
talk to the workspace is faked: it runs the submitted flow here, line by line, with promptflow's own executor, the
run's variant and its column mapping applied by promptflow's own functions, and answers ``get_details`` with the
SDK's own code that makes the frame from the cloud's line runs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_promptflow.backends.azureml import load_pf_client

if importlib.util.find_spec("promptflow.azure") is None:
    pytest.skip("promptflow-azure is the 'azureml' extra", allow_module_level=True)
load_pf_client()  # promptflow-azure imported as the backend imports it, with azure-ai-ml's renamed module

from conftest import WITH_BOOM, Project, outcomes, run  # noqa: E402
from promptflow._sdk._errors import InvalidRunStatusError  # noqa: E402
from promptflow._utils.flow_utils import parse_variant  # noqa: E402
from promptflow._utils.inputs_mapping_utils import apply_inputs_mapping  # noqa: E402
from promptflow.azure.operations._run_operations import RunOperations  # noqa: E402
from promptflow.entities import Run  # noqa: E402

from pytest_promptflow.flows import load_target  # noqa: E402

WORKSPACE = "00000000-0000-0000-0000-000000000000/rg-evals/ws-evals"

TESTS = """
import pytest


def same(prediction, label):
    return {"match": float(prediction == label)}


@pytest.mark.promptflow(flow="flows/clf", data="data/with_boom.jsonl", variants={"classify": "*"})
def test_clf(flow_run):
    scored = flow_run.evaluate(same, mapping={"prediction": "${run.outputs.category}", "label": "${data.label}"})
    assert scored.metrics["match"] >= 0.4
"""

CALLABLE_TESTS = """
import pytest


def classify(text):
    return {"category": "positive" if "good" in text else "negative"}


@pytest.mark.promptflow(flow=classify, data="data/with_boom.jsonl")
def test_callable(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0
"""

#: metrics that only a run measured here has: LLM spend and latency
MEASURED_HERE = ("llm.", "tokens.", "cost.", "latency.")


class FakeRuns:
    """``pf.runs`` of a fake workspace: ``create_or_update`` takes the ``Run`` entity and runs it here."""

    _get_inputs_outputs_from_child_runs = RunOperations._get_inputs_outputs_from_child_runs  # the SDK's own

    def __init__(self, client: FakePFClient) -> None:
        self.client = client
        self.status: dict[str, str] = {}
        self.child_runs: dict[str, list[dict[str, Any]]] = {}

    def create_or_update(self, run: Run, **_: Any) -> Run:
        assert isinstance(run, Run)
        run._validate_for_run_create_operation()  # the SDK's check before it submits
        lines = [json.loads(line) for line in Path(run.data).read_text(encoding="utf-8").splitlines()]
        FakePFClient.submitted.append((run, lines))
        failure = FakePFClient.fail.get(run.variant or "")
        self.status[run.name] = "Failed" if failure else "Completed"
        self.child_runs[run.name] = [] if failure else [
            line for line in self._line_runs(run, lines) if line["index"] not in FakePFClient.drop]
        return run

    def _line_runs(self, run: Run, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the cloud's line runs would hold: each line through the flow with the run's variant and mapping."""
        target = load_target(Path(run.flow), Path(run.flow))
        variants = dict([parse_variant(run.variant)]) if run.variant else {}
        executor = target.promptflow_executor(variants, {}, {}, run.init)
        found = []
        for index, line in enumerate(lines):
            inputs = apply_inputs_mapping({"data": line}, run.column_mapping)
            result = executor.exec_line(inputs, index=index)
            completed = str(result.run_info.status.value) == "Completed"
            output = {key: value for key, value in result.output.items() if key != "line_number"}
            found.append({"index": index, "inputs": inputs, "output": output if completed else None})
        return found

    def _check_cloud_run_completed(self, run_name: str) -> None:
        if self.status[run_name] != "Completed":
            raise InvalidRunStatusError(f"Run {run_name!r} is not completed, the status is {self.status[run_name]!r}.")

    def _get_flow_runs_pagination(self, name: str, max_results: int) -> list[dict[str, Any]]:
        return self.child_runs[name][:max_results]


class FakePFClient:
    """A fake standing in for promptflow-azure's ``PFClient`` (no Azure here): it keeps the workspace's
    ``MLClient``, the runs submitted (``submitted``: each entity and its data lines) and fails the runs of
    the variants in ``fail`` (variant -> the run's error), or leaves the lines in ``drop`` out of the details."""

    submitted: list[tuple[Run, list[dict[str, Any]]]] = []
    fail: dict[str, str] = {}
    drop: set[int] = set()
    ml_clients: list[Any] = []

    def __init__(self, credential: Any = None, subscription_id: str | None = None,
                 resource_group_name: str | None = None, workspace_name: str | None = None, **kwargs: Any) -> None:
        FakePFClient.ml_clients.append(kwargs.get("ml_client"))
        self.runs = FakeRuns(self)

    def stream(self, run: Run | str, raise_on_error: bool = True) -> Run:
        """As the SDK's: a failed run raises with the run's own error message."""
        name = run.name if isinstance(run, Run) else run
        if self.runs.status[name] == "Failed" and raise_on_error:
            raise InvalidRunStatusError(FakePFClient.fail[FakePFClient.submitted[-1][0].variant or ""])
        return run if isinstance(run, Run) else Run(name=name)

    def get_details(self, run: Run | str, max_results: int = 100, all_results: bool = False) -> Any:
        return RunOperations.get_details.__wrapped__(self.runs, run, max_results=max_results, all_results=all_results)


@pytest.fixture
def fake_azure(monkeypatch: pytest.MonkeyPatch) -> type[FakePFClient]:
    """promptflow-azure's ``PFClient`` replaced by the fake, with nothing submitted yet."""
    import promptflow.azure

    monkeypatch.setattr(promptflow.azure, "PFClient", FakePFClient)
    monkeypatch.setattr(FakePFClient, "submitted", [])
    monkeypatch.setattr(FakePFClient, "fail", {})
    monkeypatch.setattr(FakePFClient, "drop", set())
    monkeypatch.setattr(FakePFClient, "ml_clients", [])
    for variable in ("SUBSCRIPTION_ID", "RESOURCE_GROUP_NAME", "WORKSPACE_NAME"):
        monkeypatch.delenv(variable, raising=False)
    return FakePFClient


def _suite(project: Project, tests: str = TESTS) -> None:
    project.dag_flow()
    project.data("with_boom", WITH_BOOM)
    project.pytester.makepyfile(test_clf=tests)


def _cells(project: Project, report: str) -> dict[str, dict[str, Any]]:
    document = json.loads((project.path / report / "report.json").read_text(encoding="utf-8"))
    return {cell["cell"]: cell for flow in document["flows"] for cell in flow["cells"]}


def test_an_azureml_run_gives_the_report_of_a_threads_run(project: Project, fake_azure: type[FakePFClient]) -> None:
    _suite(project)
    threads = run(project.pytester, "--promptflow-report", "threads")
    assert outcomes(threads) == {"passed": 2}, threads.stdout.str()
    assert not fake_azure.submitted
    cloud = run(project.pytester, "--promptflow-report", "cloud", "--promptflow-backend", "azureml",
                "--promptflow-azureml-workspace", WORKSPACE, "--promptflow-azureml-compute", "cpu-cluster")
    assert outcomes(cloud) == {"passed": 2}, cloud.stdout.str()
    here, there = _cells(project, "threads"), _cells(project, "cloud")
    assert sorted(here) == sorted(there) and len(here) == 2
    for cell_id, cell in here.items():
        other = there[cell_id]
        for key in ("index", "id", "data", "inputs", "outputs", "scores"):
            assert [row[key] for row in other["rows"]] == [row[key] for row in cell["rows"]], (cell_id, key)
        assert [row["error"] is None for row in other["rows"]] == [True] * 4 + [False]
        assert all(row[key] is None for row in other["rows"] for key in ("latency", "llm_calls", "tokens", "cost"))
        kept = {name: value for name, value in cell["metrics"].items() if not name.startswith(MEASURED_HERE)}
        assert {name: other["metrics"][name] for name in kept} == kept
        unknown = {name: value for name, value in other["metrics"].items() if name.startswith(MEASURED_HERE)}
        assert unknown == {"latency.rows": 0.0}  # no row's latency measured here; calls and cost unknown, not zero
        assert "llm.calls" in cell["metrics"] and not cell["ran_in"]
        assert other["ran_in"].startswith("Azure ML run clf_")


def test_the_submitted_run_carries_flow_data_mapping_variant_and_compute(
        project: Project, fake_azure: type[FakePFClient]) -> None:
    _suite(project)
    result = run(project.pytester, "--promptflow-backend", "azureml", "--promptflow-azureml-workspace", WORKSPACE,
                 "--promptflow-azureml-compute", "serverless:Standard_E4ds_v4", "-rA")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["  2 cells ran in Azure ML run clf_*, Azure ML run clf_*: LLM calls, tokens, cost "
                                 "and latency are not counted here (unknown, not zero) and no answer went to the LLM "
                                 "store"])
    by_variant = {entity.variant: (entity, lines) for entity, lines in fake_azure.submitted}
    assert sorted(by_variant, key=str) == ["${classify.variant_1}", None]  # variant_0 is the default
    for entity, lines in by_variant.values():
        assert Path(entity.flow) == (project.path / "flows" / "clf").resolve()
        assert lines == WITH_BOOM
        assert entity.column_mapping == {"text": "${data.text}"}
        assert entity._resources == {"instance_type": "Standard_E4ds_v4"}  # the entity keeps it private
        assert entity.tags == {"pytest_promptflow_cell": entity.display_name}
    client = fake_azure.ml_clients[0]
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == tuple(WORKSPACE.split("/"))


def test_a_named_compute_is_the_runs_compute(project: Project, fake_azure: type[FakePFClient]) -> None:
    _suite(project)
    result = run(project.pytester, "--promptflow-backend", "azureml", "--promptflow-azureml-workspace", WORKSPACE,
                 "--promptflow-azureml-compute", "cpu-cluster", "-k", "variant_0")
    assert outcomes(result) == {"passed": 1, "deselected": 1}, result.stdout.str()
    assert [entity._resources for entity, _ in fake_azure.submitted] == [{"compute": "cpu-cluster"}]


def test_a_failed_run_makes_its_rows_error_rows_of_one_line_and_the_session_goes_on(
        project: Project, fake_azure: type[FakePFClient]) -> None:
    _suite(project)
    fake_azure.fail["${classify.variant_1}"] = "Compute cpu-cluster is not found in the workspace.\nTrace: ..."
    result = run(project.pytester, "--promptflow-report", "report", "--promptflow-backend", "azureml",
                 "--promptflow-azureml-workspace", WORKSPACE)
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    cells = _cells(project, "report")
    failed = next(cell for cell_id, cell in cells.items() if "variant_1" in cell_id)
    errors = {row["error"] for row in failed["rows"]}
    assert len(errors) == 1
    error = errors.pop()
    assert error.startswith("AzureMLRunError: Azure ML run ") and "\n" not in error
    assert error.endswith(": Compute cpu-cluster is not found in the workspace.")
    passed = next(cell for cell_id, cell in cells.items() if "variant_0" in cell_id)
    assert [row["error"] is None for row in passed["rows"]] == [True] * 4 + [False]


def test_a_line_missing_from_the_details_is_an_error_row_naming_it(
        project: Project, fake_azure: type[FakePFClient]) -> None:
    _suite(project)
    fake_azure.drop.add(2)
    result = run(project.pytester, "--promptflow-report", "report", "--promptflow-backend", "azureml",
                 "--promptflow-azureml-workspace", WORKSPACE, "-k", "variant_0")
    assert outcomes(result) == {"passed": 1, "deselected": 1}, result.stdout.str()
    rows = next(iter(_cells(project, "report").values()))["rows"]
    assert rows[2]["error"].startswith("MissingLine: flow clf, row 2 of dataset with_boom: line 2 is not in the "
                                       "details of Azure ML run ")
    assert rows[4]["error"].startswith("LineFailed: flow clf, row 4 of dataset with_boom: line 4 failed in Azure ML")
    assert [row["error"] for row in rows[:2] + rows[3:4]] == [None] * 3


def test_a_callable_under_azureml_fails_its_items_with_one_line(
        project: Project, fake_azure: type[FakePFClient]) -> None:
    project.data("with_boom", WITH_BOOM)
    project.pytester.makepyfile(test_callable=CALLABLE_TESTS)
    result = run(project.pytester, "--promptflow-backend", "azureml", "--promptflow-azureml-workspace", WORKSPACE)
    assert outcomes(result) == {"errors": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["flow classify is a Python callable; the azureml backend runs promptflow flows "
                                 "(DAG, flex, prompty) only; run it with --promptflow-backend threads"])
    assert "Traceback" not in result.stdout.str() and not fake_azure.submitted


@pytest.mark.parametrize(("options", "says"), [
    ((), "--promptflow-backend azureml needs a workspace; give --promptflow-azureml-workspace SUBSCRIPTION/"
         "RESOURCE_GROUP/WORKSPACE or set SUBSCRIPTION_ID, RESOURCE_GROUP_NAME, WORKSPACE_NAME"),
    (("--promptflow-azureml-workspace", "sub/rg"), "--promptflow-azureml-workspace 'sub/rg' is not SUBSCRIPTION/*"),
    (("--promptflow-azureml-workspace", WORKSPACE, "--promptflow-azureml-compute", "gpu:x"),
     "--promptflow-azureml-compute 'gpu:x' is neither a compute name nor serverless*"),
])
def test_a_missing_or_malformed_azureml_option_is_one_usage_line(
        project: Project, fake_azure: type[FakePFClient], options: tuple[str, ...], says: str) -> None:
    _suite(project)
    result = run(project.pytester, "--promptflow-backend", "azureml", *options)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {says}"])
    assert len([line for line in result.stderr.lines if line.strip()]) == 1, result.stderr.str()
    assert not fake_azure.submitted


def test_a_flex_class_goes_up_with_its_init_and_gives_the_rows_of_a_threads_run(
        project: Project, fake_azure: type[FakePFClient]) -> None:
    project.flex_class(inputs=True)
    project.data("with_boom", WITH_BOOM)
    project.pytester.makepyfile(test_flex="""
        import pytest

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/with_boom.jsonl", init={"word": "good"})
        def test_flex(flow_run):
            assert flow_run.metrics["error_rate"] == 0.0
        """)
    threads = run(project.pytester, "--promptflow-report", "threads")
    cloud = run(project.pytester, "--promptflow-report", "cloud", "--promptflow-backend", "azureml",
                "--promptflow-azureml-workspace", WORKSPACE)
    assert outcomes(threads) == outcomes(cloud) == {"passed": 1}, cloud.stdout.str()
    [(entity, lines)] = fake_azure.submitted
    assert Path(entity.flow) == (project.path / "flows" / "flexcls").resolve() and entity.variant is None
    assert entity.init == {"word": "good"} and lines == WITH_BOOM
    [here], [there] = _cells(project, "threads").values(), _cells(project, "cloud").values()
    assert [row["outputs"] for row in there["rows"]] == [row["outputs"] for row in here["rows"]]


@pytest.mark.parametrize(("marker", "says"), [
    ('variants={"classify": "*"}, overrides={"nodes.classify.inputs.temperature": [0.7]}',
     "*flow clf: override nodes.classify.inputs.temperature cannot be set on an Azure ML run (promptflow's cloud "
     "run takes a node's connection and deployment_name only); make the value a node variant, or run it with "
     "--promptflow-backend threads"),
    ('variants={"classify": "variant_1", "decorate": "lower"}',
     "*flow clf: the cell sets classify=variant_1, decorate=lower, but an Azure ML run takes one node's variant; "
     "vary one node per cell (strategy one_at_a_time), or run it with --promptflow-backend threads"),
])
def test_a_cell_a_cloud_run_cannot_express_fails_with_one_line(
        project: Project, fake_azure: type[FakePFClient], marker: str, says: str) -> None:
    _suite(project, TESTS.replace('variants={"classify": "*"}', marker))
    result = run(project.pytester, "--promptflow-backend", "azureml", "--promptflow-azureml-workspace", WORKSPACE,
                 "-k", "variant_1")
    expected = {"errors": 1, "deselected": 1} if "*" in marker else {"errors": 1}
    assert outcomes(result) == expected, result.stdout.str()
    result.stdout.fnmatch_lines([says])
    assert "Traceback" not in result.stdout.str() and not fake_azure.submitted


SPEND_EXPERIMENT = """\
name: clf
flow: ../flows/clf
datasets:
- name: small
  source: ../data/small.jsonl
thresholds:
  error_rate: "<= 0.0"
  latency.p95: "<= 60"
"""


@pytest.mark.parametrize(("extra", "outcome"), [("", "passed"), ('  llm.calls: "<= 100"\n', "failed")])
def test_thresholds_on_unknown_spend_and_latency_say_the_rows_ran_in_azure_ml(
        project: Project, fake_azure: type[FakePFClient], extra: str, outcome: str) -> None:
    project.dag_flow()
    project.data("small")
    project.experiment(SPEND_EXPERIMENT + extra)
    result = run(project.pytester, "--promptflow-backend", "azureml", "--promptflow-azureml-workspace", WORKSPACE,
                 "-W", "always::pytest.PytestWarning")
    assert outcomes(result) == {outcome: 3}, result.stdout.str()  # one_at_a_time: defaults, then one node off
    result.stdout.fnmatch_lines(["*latency.p95 <= 60 not checked: latency is not measured for rows that ran in "
                                 "Azure ML run clf_*"])
    if extra:
        result.stdout.fnmatch_lines(["*threshold on unknown metric 'llm.calls'; its rows ran in Azure ML run clf_*: "
                                     "their LLM calls, tokens and cost are not counted here (unknown, not zero)*"])
