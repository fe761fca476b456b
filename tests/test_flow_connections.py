"""Connections a flow names anywhere (typed node inputs, package tools, model configurations in init)
and init from every front end: what a user sees when the flow runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import Project, outcomes, run

from pytest_promptflow.node_connections import typed_connections

SEARCH_TOOL = '''\
from promptflow.connections import CognitiveSearchConnection
from promptflow.core import tool


@tool
def search(text: str, index: CognitiveSearchConnection) -> str:
    return text
'''

CUSTOM_TOOL = '''\
from promptflow.connections import CustomConnection
from promptflow.core import tool


@tool
def probe(text: str, service: CustomConnection) -> str:
    """Which endpoint it was given, never the key."""
    return "endpoint" if service.configs["api_base"].startswith("http") and service.secrets["api_key"] else "none"
'''


def one_node_flow(project: Project, name: str, tool: str, connection_input: str, connection: str) -> str:
    project.write(f"flows/{name}/flow.dag.yaml", f"""\
inputs:
  text:
    type: string
outputs:
  out:
    type: string
    reference: ${{step.output}}
nodes:
- name: step
  type: python
  source:
    type: code
    path: step.py
  inputs:
    text: ${{inputs.text}}
    {connection_input}: {connection}
""")
    project.write(f"flows/{name}/step.py", tool)
    return f"flows/{name}"


def test_typed_inputs_of_script_and_package_tools_are_connections(project: Project) -> None:
    one_node_flow(project, "svc", CUSTOM_TOOL, "service", "my_service")
    nodes = [
        {"name": "step", "type": "python", "source": {"type": "code", "path": "step.py"},
         "inputs": {"text": "${inputs.text}", "service": "my_service"}},
        {"name": "embed", "type": "python",
         "source": {"type": "package", "tool": "promptflow.tools.embedding.embedding"},
         "inputs": {"connection": "aoai", "input": "${inputs.text}", "deployment_name": "ada"}},
        {"name": "broken", "type": "python", "source": {"type": "code", "path": "missing.py"},
         "inputs": {"conn": "never"}},
    ]
    found = typed_connections(nodes, project.path / "flows" / "svc")
    assert found == {"my_service": ("CustomConnection", "step"), "aoai": ("AzureOpenAIConnection", "embed")}


def test_unsupported_connection_kind_is_one_line_on_its_flow_only(project: Project, pytester: pytest.Pytester) -> None:
    one_node_flow(project, "search", SEARCH_TOOL, "index", "my_index")
    one_node_flow(project, "svc", CUSTOM_TOOL, "service", "my_service")
    project.data("small")
    pytester.makepyfile(test_kinds="""
        import pytest

        @pytest.mark.promptflow(flow="flows/search", data="data/small.jsonl")
        def test_search(flow_run):
            pass

        @pytest.mark.promptflow(flow="flows/svc", data="data/small.jsonl")
        def test_custom(flow_run):
            assert [o["out"] for o in flow_run.outputs] == ["endpoint"] * 4
    """)
    result = run(pytester, "--promptflow-llm=replay")
    assert outcomes(result) == {"errors": 1, "passed": 1}
    flow_file = project.path / "flows" / "search" / "flow.dag.yaml"
    result.stdout.fnmatch_lines([f"{flow_file}:*: flow search, node step: connection 'my_index' is a "
                                 "CognitiveSearchConnection, which cannot be made without credentials; declare it "
                                 "with its credentials in experiment.yaml connections or a .env line my_index={...}, "
                                 "or make the tool take one of AzureOpenAIConnection, OpenAIConnection, "
                                 "CustomConnection"])
    result.stdout.no_fnmatch_line("*Traceback*")


MODEL_CONFIG_FLOW = '''\
from promptflow.core import AzureOpenAIModelConfiguration


class Probe:
    def __init__(self, model_config: AzureOpenAIModelConfiguration, label: str = "none"):
        self.endpoint = model_config.azure_endpoint
        self.label = label

    def __call__(self, text: str) -> dict:
        return {"endpoint": self.endpoint.startswith("http"), "label": self.label}
'''


def model_config_flow(project: Project, name: str = "mc", init_json: str | None = None) -> str:
    project.write(f"flows/{name}/flow.flex.yaml", "entry: probe_entry:Probe\n")
    project.write(f"flows/{name}/probe_entry.py", MODEL_CONFIG_FLOW)
    if init_json is not None:
        project.write(f"flows/{name}/init.json", init_json)
    return f"flows/{name}"


def test_nothing_is_written_under_home_promptflow(project: Project, pytester: pytest.Pytester,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model_config naming a connection and a typed CustomConnection, in a fresh process whose HOME is
    empty: resolved by us (promptflow's store would not know them), and HOME stays empty."""
    model_config_flow(project)
    one_node_flow(project, "svc", CUSTOM_TOOL, "service", "my_service")
    project.data("small")
    pytester.makepyfile(test_home="""
        import pytest

        INIT = {"model_config": {"connection": "aoai", "azure_deployment": "gpt-35-turbo"}}

        @pytest.mark.promptflow(flow="flows/mc", data="data/small.jsonl", init=INIT)
        def test_model_config(flow_run):
            assert [o["endpoint"] for o in flow_run.outputs] == [True] * 4

        @pytest.mark.promptflow(flow="flows/svc", data="data/small.jsonl")
        def test_custom(flow_run):
            assert [o["out"] for o in flow_run.outputs] == ["endpoint"] * 4
    """)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PF_HOME_DIRECTORY", raising=False)  # the child picks its own, as a user's run does
    result = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--promptflow-llm=replay",
                          "-q", str(pytester.path))
    assert "2 passed" in result.stdout.str(), result.stdout.str() + result.stderr.str()
    assert list(home.rglob("*")) == []


def test_init_json_is_read_and_explicit_init_wins(project: Project, pytester: pytest.Pytester) -> None:
    model_config_flow(project, init_json='{"model_config": {"connection": "aoai", "azure_deployment": "g"},'
                                         ' "label": "from_file"}')
    project.data("small")
    pytester.makepyfile(test_init_json="""
        import pytest

        @pytest.mark.promptflow(flow="flows/mc", data="data/small.jsonl")
        def test_default(flow_run):
            assert flow_run.outputs[0] == {"endpoint": True, "label": "from_file"}

        @pytest.mark.promptflow(flow="flows/mc", data="data/small.jsonl", init={"label": "explicit"})
        def test_explicit(flow_run):
            assert flow_run.outputs[0] == {"endpoint": True, "label": "explicit"}
    """)
    run(pytester, "--promptflow-llm=replay").assert_outcomes(passed=2)


def test_broken_init_json_is_one_line(project: Project, pytester: pytest.Pytester) -> None:
    model_config_flow(project, init_json='{"label": \n  oops}')
    project.data("small")
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.promptflow(flow="flows/mc", data="data/small.jsonl")
        def test_bad(flow_run):
            pass
    """)
    result = run(pytester, "--promptflow-llm=replay")
    assert outcomes(result) == {"errors": 1}, result.stdout.str()
    result.stdout.fnmatch_lines([f"*{project.path / 'flows' / 'mc' / 'init.json'}:2: init arguments are not valid "
                                 "JSON*; fix the JSON object*"])
    result.stdout.no_fnmatch_line("*Traceback*")


EVAL_CLASS_FLOW = '''\
class Match:
    def __init__(self, word: str):
        self.word = word

    def __call__(self, category: str) -> dict:
        return {"hit": int(category == self.word)}
'''


def test_experiment_init_for_the_flow_and_each_evaluator(project: Project, pytester: pytest.Pytester) -> None:
    project.flex_class(inputs=True)
    project.write("flows/match/flow.flex.yaml", "entry: match_entry:Match\n")
    project.write("flows/match/match_entry.py", EVAL_CLASS_FLOW)
    project.data("small")
    project.experiment("""
        flow: ../flows/flexcls
        init:
          word: good
        datasets:
        - name: small
          source: ../data/small.jsonl
          mappings:
            text: ${data.text}
        evaluators:
        - name: positive
          flow: ../flows/match
          init:
            word: positive
          datasets:
          - name: small
            mappings:
              category: ${run.outputs.category}
        thresholds:
          hit: ">= 0.5"
          positive.hit: "<= 0.5"
    """)
    result = run(pytester, "-v")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()


def test_flow_run_evaluate_with_init_instantiates_a_class_evaluator(project: Project,
                                                                     pytester: pytest.Pytester) -> None:
    project.flex_class(inputs=True)
    project.write("flows/match/flow.flex.yaml", "entry: match_entry:Match\n")
    project.write("flows/match/match_entry.py", EVAL_CLASS_FLOW)
    project.data("small")
    pytester.makepyfile(test_eval_init="""
        import pytest

        class Match:
            def __init__(self, word):
                self.word = word

            def __call__(self, category):
                return {"hit": int(category == self.word)}

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl", init={"word": "good"})
        def test_evaluators(flow_run):
            assert flow_run.evaluate(Match, init={"word": "positive"}).metrics["hit"] == 0.5
            assert flow_run.evaluate(Match, init={"word": "negative"}).metrics["hit"] == 0.5
            mapping = {"category": "${run.outputs.category}"}
            assert flow_run.evaluate("flows/match", mapping, init={"word": "nothing"}).metrics["hit"] == 0.0

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl", init={"word": "good"})
        def test_init_on_a_function(flow_run):
            flow_run.evaluate(lambda category: {"hit": 1}, init={"word": "x"})
    """)
    result = run(pytester, "--promptflow-llm=replay")
    assert outcomes(result) == {"passed": 1, "failed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["*evaluator <lambda> is given init, but it is not a class; give init to a class "
                                 "evaluator or an evaluation flow, or drop it*"])


def test_cells_that_differ_only_in_init_are_different_cells(project: Project, pytester: pytest.Pytester) -> None:
    """Their ids and the reports' configuration name the init values; a connection by its name."""
    import csv

    project.write("flows/flexcls/flow.flex.yaml", "entry: conn_entry:Classifier\n")
    project.write("flows/flexcls/conn_entry.py", '''\
class Classifier:
    def __init__(self, word: str, llm_connection: str = ""):
        self.word = word

    def __call__(self, text: str) -> dict:
        return {"category": "positive" if self.word in text else "negative"}
''')
    project.data("small")
    pytester.makepyfile(test_init_cells="""
        import pytest

        def hit(category, label):
            return {"hit": float(category == label)}

        MAPPING = {"category": "${run.outputs.category}", "label": "${data.label}"}

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl", init={"word": "good"})
        def test_a(flow_run):
            assert flow_run.evaluate(hit, MAPPING).metrics["hit"] == 1.0

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl",
                                init={"word": "bad", "llm_connection": "aoai"})
        def test_b(flow_run):
            assert flow_run.evaluate(hit, MAPPING).metrics["hit"] == 0.25
    """)
    result = run(pytester, "-v", "--promptflow-llm=replay", "--promptflow-report", "out")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_a?flexcls-word=good-small? PASSED*",
                                 "*test_b?flexcls-word=bad-llm_connection=aoai-small? PASSED*"])
    with (pytester.path / "out" / "metrics.csv").open(newline="") as stream:
        configs = {row["config"]: row["best"] for row in csv.DictReader(stream)}
    assert set(configs) == {"word=good", "word=bad-llm_connection=aoai"}


def test_flex_yaml_init_types_name_connections(project: Project) -> None:
    from pytest_promptflow.flows import load_target

    project.write("flows/typed/flow.flex.yaml",
                  "entry: typed_entry:Flow\ninit:\n  search:\n    type: CustomConnection\n  label:\n    type: string\n")
    target = load_target("flows/typed", project.path)
    init = {"search": "my_search", "label": "x", "model_config": {"connection": "oai", "model": "gpt-4o"}}
    assert target.connections(init) == {"my_search": "CustomConnection", "oai": "OpenAIConnection"}


def test_a_served_flow_gets_its_model_configuration_from_our_connections(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """A released flex flow's flow.init.json names a connection; the serving app gets it resolved (here
    from the environment), not from promptflow's connection store, which does not know it."""
    from promptflow.core import _prompty_utils

    from pytest_promptflow.deploy.serve import create_app

    project.write("flow/flow.flex.yaml", "entry: served_entry:Probe\n")
    project.write("flow/served_entry.py", MODEL_CONFIG_FLOW.replace("-> dict:", "-> str:").replace(
        'return {"endpoint": self.endpoint.startswith("http"), "label": self.label}', "return self.endpoint"))
    project.write("flow/flow.init.json", '{"model_config": {"connection": "aoai", "azure_deployment": "gpt"}}')
    monkeypatch.setenv("AOAI_API_KEY", "k")
    monkeypatch.setenv("AOAI_API_BASE", "https://env.example/")
    monkeypatch.setenv("PROMPTFLOW_PROJECT_PATH", "")  # create_app sets it; restored afterwards
    monkeypatch.setattr(_prompty_utils, "get_connection_by_name", _prompty_utils.get_connection_by_name)
    app = create_app(project.path / "flow", project.path)
    response = app.test_client().post("/score", json={"text": "x"})
    assert (response.status_code, response.get_json()) == (200, "https://env.example/")


UNION_TOOL = '''\
from typing import Union

from promptflow.connections import AzureOpenAIConnection, CustomConnection
from promptflow.core import tool


@tool
def probe(text: str, conn: Union[CustomConnection, AzureOpenAIConnection]) -> str:
    if not isinstance(conn, CustomConnection):
        raise TypeError(f"got a {type(conn).__name__}")
    return "custom"
'''


@pytest.mark.parametrize("declared", [True, False])
def test_a_declared_connection_type_wins_where_the_tool_takes_several(
        declared: bool, project: Project, pytester: pytest.Pytester) -> None:
    """promptflow's basic-with-connection takes Union[CustomConnection, AzureOpenAIConnection]: the type comes
    from experiment.yaml's connection_type when declared, else the first we can make (Azure OpenAI)."""
    one_node_flow(project, "union", UNION_TOOL, "conn", "my_conn")
    project.data("small")
    connections = "connections:\n- name: my_conn\n  connection_type: CustomConnection\n" if declared else ""
    project.experiment(f"""\
name: union
flow: ../flows/union
{connections}datasets:
- name: small
  source: ../data/small.jsonl
thresholds:
  error_rate: "<= 0"
""")
    result = run(pytester, "--promptflow-llm=replay")
    assert outcomes(result) == ({"passed": 1} if declared else {"failed": 1}), result.stdout.str()
