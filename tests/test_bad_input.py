"""Bad input: one clear line naming file:line (or the item) and the fix; no traceback; the other
items of the same run still run and pass."""

from __future__ import annotations

import fnmatch

import pytest

from conftest import Project, outcomes, run

GOOD_EXPERIMENT = """\
name: good
flow: ../flows/clf
datasets:
- name: small
  source: ../data/small.jsonl
variants:
  nodes:
    classify: [variant_0]
thresholds:
  error_rate: "<= 0"
"""

#: line numbers below refer to this file (1-based)
BAD_EXPERIMENT = """\
name: bad
flow: ../flows/clf
datasets:
- name: small
  source: ../data/small.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: ../flows/ev
  datasets:
  - name: small
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.category}"
variants:
  nodes:
    classify: [variant_0]
thresholds:
  accuracy: ">= 0.75"
"""

GOOD_TESTS = """\
import pytest

def classify(text):
    return {"category": "positive" if "good" in text else "negative"}

@pytest.mark.promptflow(flow=classify, data="data/small.jsonl")
def test_good_cell(flow_run):
    assert flow_run.metrics["error_rate"] == 0

def test_plain():
    assert True
"""


def _setup(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.data("empty", [])
    project.write("data/broken.jsonl", '{"text": "a good day", "label": "positive"}\n'
                                       '{"text": "a bad day", "label": "negative"}\n'
                                       '{"text": "good food", "label": "positive"\n'
                                       '{"text": "awful", "label": "negative"}\n')
    project.experiment(GOOD_EXPERIMENT, folder="good")
    pytester.makepyfile(test_good=GOOD_TESTS)


def _check(result: pytest.RunResult, line: str, passed: int) -> None:
    """``line`` is printed once; no traceback; the other items passed; the bad one failed or errored."""
    result.stdout.fnmatch_lines([line])
    report = result.outlines[: next((i for i, t in enumerate(result.outlines) if "short test summary" in t), None)]
    assert len([text for text in report if fnmatch.fnmatch(text, line)]) == 1, "printed more than once"
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*site-packages*")
    result.stdout.no_fnmatch_line("*pytest_promptflow/*.py*")
    result.stdout.no_fnmatch_line("*Interrupted*")
    found = outcomes(result)
    bad = found.pop("errors", 0) + found.pop("failed", 0)
    assert (found, bad) == ({"passed": passed}, 1), result.stdout.str()[-3000:]
    assert result.ret == pytest.ExitCode.TESTS_FAILED


EXPERIMENT_CASES = {
    "missing flow folder": (
        ("flow: ../flows/clf", "flow: ../flows/nope"),
        "*bad/experiment.yaml:2: flow '../flows/nope' not found*; point it *flow.dag.yaml*",
    ),
    "yaml syntax error": (
        ('    text: "${data.text}"', '    text: "${data.text}" trailing'),
        "*bad/experiment.yaml:7: YAML syntax error: *; fix the YAML at that line*",
    ),
    "unknown key": (
        ("thresholds:", "threshold:"),
        "*bad/experiment.yaml:19: unknown key 'threshold' in experiment; did you mean 'thresholds'?*",
    ),
    "unknown node": (
        ("    classify: [variant_0]", "    clasify: [variant_0]"),
        "*bad/experiment.yaml:1[678]: node 'clasify' has no variants in the flow (nodes with variants: "
        "classify, decorate); name a node listed under node_variants*",
    ),
    "unknown variant": (
        ("    classify: [variant_0]", "    classify: [variant_9]"),
        "*bad/experiment.yaml:1[678]: node 'classify' has no variant 'variant_9' (it has variant_0, variant_1); "
        "use one of those ids*",
    ),
    "mapping to a missing column": (
        ('    text: "${data.text}"', '    text: "${data.txt}"'),
        "*bad/experiment.yaml:[67]: dataset 'small' (small.jsonl) has no column 'txt'; did you mean 'text'?*",
    ),
    "unknown connection type": (
        ("evaluators:", "connections:\n- name: aoai\n  connection_type: AzureOpenAIConection\nevaluators:"),
        "*bad/experiment.yaml:10: connection 'aoai': unknown connection_type 'AzureOpenAIConection'; did you mean "
        "'AzureOpenAIConnection'? promptflow's types: *",
    ),
    "malformed jsonl line": (
        ("  source: ../data/small.jsonl", "  source: ../data/broken.jsonl"),
        "*data/broken.jsonl:3: malformed JSON: *; fix or remove line 3*",
    ),
    "empty dataset": (
        ("  source: ../data/small.jsonl", "  source: ../data/empty.jsonl"),
        "*empty.jsonl*: dataset 'small' has no rows; add rows*",
    ),
    "threshold on an unknown metric": (
        ('  accuracy: ">= 0.75"', '  acuracy: ">= 0.75"'),
        "*bad/experiment.yaml:20: threshold on unknown metric 'acuracy'; did you mean 'accuracy'?*",
    ),
    "unparsable threshold": (
        ('  accuracy: ">= 0.75"', '  accuracy: "at least 0.75"'),
        "*bad/experiment.yaml:20: cannot parse threshold accuracy: 'at least 0.75'; write an operator and a number*",
    ),
    "confidence level over 100%": (
        ('  accuracy: ">= 0.75"', '  accuracy: ">= 0.75 at 150%"'),
        "*bad/experiment.yaml:20: threshold accuracy: '>= 0.75 at 150%' has confidence level '150%'; write a "
        "percentage between 0% and 100%, e.g. \"at 95%\"*",
    ),
    "'at' with no level": (
        ('  accuracy: ">= 0.75"', '  accuracy: ">= 0.75 at"'),
        "*bad/experiment.yaml:20: threshold accuracy: '>= 0.75 at' says 'at' with no confidence level; write the "
        "level after it*",
    ),
    "a level on a metric with no interval": (
        ('  accuracy: ">= 0.75"', '  latency.p95: "<= 5 at 95%"'),
        "*bad/experiment.yaml:20: latency.p95 has no interval (it is not a mean of per-row values); "
        "drop 'at 95%' or gate a mean of per-row scores*",
    ),
}


@pytest.mark.parametrize("case", list(EXPERIMENT_CASES))
def test_bad_experiment(case: str, project: Project, pytester: pytest.Pytester) -> None:
    (old, new), line = EXPERIMENT_CASES[case]
    assert old in BAD_EXPERIMENT
    _setup(project, pytester)
    project.experiment(BAD_EXPERIMENT.replace(old, new, 1), folder="bad")
    result = run(pytester)
    _check(result, line, passed=3)


MARKER_CASES = {
    "missing flow folder": (
        'flow="flows/nope", data="data/small.jsonl"',
        "*test_bad.py:*: flow 'flows/nope' not found (looked for *); give a flow folder*",
    ),
    "unknown node": (
        'flow="flows/clf", data="data/small.jsonl", variants={"clasify": "*"}',
        "*test_bad.py:*: node 'clasify' has no variants in the flow (nodes with variants: classify, decorate)*",
    ),
    "unknown variant": (
        'flow="flows/clf", data="data/small.jsonl", variants={"classify": ["variant_9"]}',
        "*test_bad.py:*: node 'classify' has no variant 'variant_9' (it has variant_0, variant_1); use one of*",
    ),
    "mapping to a missing column": (
        'flow="flows/clf", data="data/small.jsonl", mappings={"text": "${data.txt}"}',
        "*test_bad.py:*dataset 'small' (small.jsonl) has no column 'txt'; did you mean 'text'?*",
    ),
    "malformed jsonl line": (
        'flow="flows/clf", data="data/broken.jsonl"',
        "*data/broken.jsonl:3: malformed JSON: *; fix or remove line 3*",
    ),
    "data=42": ('flow="flows/clf", data=42', "*test_bad.py:*: promptflow marker: data=42 is not a dataset path; give "
                "a JSONL or CSV path*"),
    "data=None": ('flow="flows/clf", data=None', "*test_bad.py:*: promptflow marker: data=None is not a dataset path*"),
    "data=[42]": ('flow="flows/clf", data=[42]', "*test_bad.py:*: promptflow marker: data=[[]42] is not a dataset path*"),
    "variants=42": ('flow="flows/clf", data="data/small.jsonl", variants=42',
                    "*test_bad.py:*: promptflow marker: variants=42 is not a mapping; write e.g. variants={*"),
    "overrides=42": ('flow="flows/clf", data="data/small.jsonl", overrides=42',
                     "*test_bad.py:*: promptflow marker: overrides=42 is not a mapping; write e.g. overrides={*"),
    "mappings=42": ('flow="flows/clf", data="data/small.jsonl", mappings=42',
                    "*test_bad.py:*: promptflow marker: mappings=42 is not a mapping; write e.g. mappings={*"),
}


def _bad_test_beside_a_good_one(pytester: pytest.Pytester, arguments: str, body: str = "pass") -> None:
    """test_bad.py: a good marked test, then one marked with ``arguments`` whose body is ``body``."""
    pytester.makepyfile(test_bad=f"""
        import pytest

        def echo(text):
            return {{"text": text}}

        @pytest.mark.promptflow(flow=echo, data="data/small.jsonl")
        def test_neighbour(flow_run):
            assert len(flow_run.rows) == 4

        @pytest.mark.promptflow({arguments})
        def test_bad(flow_run):
            {body}
    """)


@pytest.mark.parametrize("case", list(MARKER_CASES))
def test_bad_marker(case: str, project: Project, pytester: pytest.Pytester) -> None:
    arguments, line = MARKER_CASES[case]
    _setup(project, pytester)
    _bad_test_beside_a_good_one(pytester, arguments)
    result = run(pytester)
    # the good experiment, both tests of test_good.py and the bad test's neighbour in its own module
    _check(result, line, passed=4)


ONE_NODE_DAG = """\
inputs:
  text:
    type: string
outputs:
  out:
    type: string
    reference: ${n1.output}
nodes:
- name: n1
  type: python
  source:
    type: code
    path: n1.py
  inputs:
    text: ${inputs.text}
"""
ECHO_NODE = "from promptflow.core import tool\n\n\n@tool\ndef echo(text: str) -> str:\n    return text\n"
CONNECTION_NODE = """\
from promptflow.connections import {kind}
from promptflow.core import tool


@tool
def echo(text: str, conn: {kind}) -> str:
    return text
"""
CYCLE_DAG = ONE_NODE_DAG.replace("${inputs.text}", "${n2.output}") + """\
- name: n2
  type: python
  source:
    type: code
    path: n1.py
  inputs:
    text: ${n1.output}
"""
FLEX_INIT_BOOM = """\
class Answer:
    def __init__(self, prefix: str = ""):
        raise ValueError("no model here")

    def __call__(self, text: str) -> str:
        return self.prefix + text
"""
BROKEN_PROMPTY = """\
---
name: bad
model:
  api: chat
  configuration: [type: azure_openai
inputs:
  text:
    type: string
---
system:
{{text}}
"""

#: case -> (files of flows/bad, the marker's arguments, the expected line)
LOAD_CASES = {
    "python node raises at import": (
        {"flow.dag.yaml": ONE_NODE_DAG, "n1.py": 'import os\nraise RuntimeError("broken at import")\n'},
        'flow="flows/bad"',
        "*flows/bad/n1.py:2: flow bad, node n1: RuntimeError: broken at import; fix that module (`python n1.py`*",
    ),
    "node cycle": (
        {"flow.dag.yaml": CYCLE_DAG, "n1.py": ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml: flow bad: *circular dependency*['n1', 'n2']*; break the cycle*",
    ),
    "missing tool file": (
        {"flow.dag.yaml": ONE_NODE_DAG},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:9: flow bad, node n1: *Tool file 'n1.py' can not be found*; check the node's "
        "source.path*",
    ),
    "connection of an unsupported kind": (
        {"flow.dag.yaml": ONE_NODE_DAG.replace("    text: ${inputs.text}", "    text: ${inputs.text}\n    conn: "
                                               "search"),
         "n1.py": CONNECTION_NODE.format(kind="CognitiveSearchConnection")},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:9: flow bad, node n1: connection 'search' is a CognitiveSearchConnection, which "
        "cannot be made without credentials; declare it with its credentials in experiment.yaml connections or a "
        ".env line search={...}, or make the tool take one of *",
    ),
    "missing package of a flow": (
        {"flow.dag.yaml": ONE_NODE_DAG, "requirements.txt": "# what the flow needs\nnot-installed-pkg-xyz>=1.0\n",
         "n1.py": "import not_installed_pkg_xyz\n" + ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/requirements.txt:2: flow bad: package 'not-installed-pkg-xyz' that its requirements.txt names "
        "is not installed; pip install -r *flows/bad/requirements.txt",
    ),
    "flex init that raises": (
        {"flow.flex.yaml": "entry: boom:Answer\n", "boom.py": FLEX_INIT_BOOM},
        'flow="flows/bad", init={"prefix": "> "}',
        "*flows/bad/boom.py:3: flow bad: ValueError: no model here; fix the entry class's __init__*",
    ),
    "prompty with broken front matter": (
        {"bad.prompty": BROKEN_PROMPTY},
        'flow="flows/bad/bad.prompty"',
        "*flows/bad/bad.prompty:6: prompty front matter: YAML syntax error: *; fix the YAML between the --- lines",
    ),
    "missing additional include": (
        {"flow.dag.yaml": "additional_includes:\n- ../shared/nope.py\n" + ONE_NODE_DAG, "n1.py": ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:2: flow bad: additional include '../shared/nope.py' not found (looked for *); "
        "fix the path*",
    ),
    "included module raises at import": (
        {"flow.dag.yaml": "additional_includes:\n- ../shared/boom.py\n" + ONE_NODE_DAG,
         "n1.py": "import boom  # noqa: F401\n" + ECHO_NODE, "../shared/boom.py": 'import os\nraise OSError("no disk")\n'},
        'flow="flows/bad"',
        "*flows/shared/boom.py:2: flow bad, node n1: OSError: no disk; fix that module*",
    ),
    "prompty whose model is not a mapping": (
        {"bad.prompty": BROKEN_PROMPTY.replace("model:\n  api: chat\n  configuration: [type: azure_openai\n",
                                               "model: 42\n")},
        'flow="flows/bad/bad.prompty"',
        "*flows/bad/bad.prompty:3: prompty front matter: model must be a mapping, got int 42; see promptflow's "
        "prompty format",
    ),
    "prompty whose inputs are a list": (
        {"bad.prompty": BROKEN_PROMPTY.replace("  configuration: [type: azure_openai\n", "").replace(
            "inputs:\n  text:\n    type: string\n", "inputs: [text]\n")},
        'flow="flows/bad/bad.prompty"',
        "*flows/bad/bad.prompty:5: prompty front matter: inputs must be a mapping, got a list*",
    ),
    "prompty whose connection is a number": (
        {"bad.prompty": BROKEN_PROMPTY.replace("  configuration: [type: azure_openai\n",
                                               "  configuration:\n    connection: 42\n")},
        'flow="flows/bad/bad.prompty"',
        "*flows/bad/bad.prompty:6: prompty front matter: connection must be a connection's name, got int 42; write e.g.*",
    ),
    "nodes that are not a list": (
        {"flow.dag.yaml": ONE_NODE_DAG.split("nodes:")[0] + "nodes: 42\n"},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:8: flow file: nodes must be a list, got int 42; write 'nodes:' followed by*",
    ),
    "a node with no name": (
        {"flow.dag.yaml": ONE_NODE_DAG.replace("- name: n1\n", "- name:\n"), "n1.py": ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:8: flow file: node #1 is not a mapping with a name; give every node*",
    ),
    "node_variants that are a list": (
        {"flow.dag.yaml": ONE_NODE_DAG + "node_variants:\n- n1\n", "n1.py": ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:16: flow file: node_variants must be a mapping, got a list*",
    ),
    "a node that uses variants it has not": (
        {"flow.dag.yaml": ONE_NODE_DAG.replace("- name: n1\n", "- name: n1\n  use_variants: true\n"),
         "n1.py": ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:9: flow file: node 'n1' uses variants but node_variants has none for it*",
    ),
    "a default variant that does not exist": (
        {"flow.dag.yaml": ONE_NODE_DAG.replace("- name: n1\n", "- name: n1\n  use_variants: true\n") +
         "node_variants:\n  n1:\n    default_variant_id: v9\n    variants:\n      v0:\n        node: {}\n",
         "n1.py": ECHO_NODE},
        'flow="flows/bad"',
        "*flows/bad/flow.dag.yaml:19: flow file: node 'n1' has no variant 'v9' (default_variant_id); use one of v0",
    ),
    "flex with no entry": (
        {"flow.flex.yaml": "inputs:\n  text:\n    type: string\n"},
        'flow="flows/bad"',
        "*flows/bad/flow.flex.yaml: flow file: entry must be 'module:function' or 'module:Class', got NoneType None*",
    ),
    "python node that exits at import": (
        {"flow.dag.yaml": ONE_NODE_DAG, "n1.py": "import sys\nsys.exit(3)\n"},
        'flow="flows/bad"',
        "*flows/bad/n1.py:2: flow bad: SystemExit: 3; do not call sys.exit() or exit() in the flow's code*",
    ),
    "flow=42": ({}, "flow=42", "*test_bad.py:*: flow=42 is not a flow; give a flow folder *"),
    "flow=None": ({}, "flow=None", "*test_bad.py:*: flow=None is not a flow; give a flow folder *"),
}


def _bad_flow_project(case: str, project: Project, pytester: pytest.Pytester) -> None:
    files, arguments, _ = LOAD_CASES[case]
    _setup(project, pytester)
    for name, text in files.items():
        project.write(f"flows/bad/{name}", text)
    _bad_test_beside_a_good_one(pytester, f'{arguments}, data="data/small.jsonl"')


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_flow_that_does_not_load(case: str, project: Project, pytester: pytest.Pytester) -> None:
    """One line for the flow's item; the good DAG flow's experiment and the other tests pass."""
    _bad_flow_project(case, project, pytester)
    result = run(pytester)
    _check(result, LOAD_CASES[case][2], passed=4)


def test_marked_test_without_flow_run_errors_alone(project: Project, pytester: pytest.Pytester) -> None:
    """Not a usage error that stops the session: that test errors in one line, the others run."""
    _setup(project, pytester)
    pytester.makepyfile(test_bad="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
        def test_bad():
            pass
    """)
    _check(run(pytester), "*test_bad.py:3: @pytest.mark.promptflow needs the test to take a flow_run argument; "
           "write def test_bad(flow_run): ...", passed=3)


#: LOAD_CASES of a flow a path names, given to an experiment.yaml (-n 2: under xdist)
EXPERIMENT_LOAD_CASES = [("python node raises at import", ""), ("node cycle", ""),
                         ("prompty with broken front matter", ""), ("prompty whose model is not a mapping", ""),
                         ("nodes that are not a list", ""), ("python node that exits at import", ""),
                         ("prompty whose model is not a mapping", "-n 2"), ("node cycle", "-n 2")]


@pytest.mark.parametrize(("case", "options"), EXPERIMENT_LOAD_CASES)
def test_experiment_with_a_flow_that_does_not_load(case: str, options: str, project: Project,
                                                   pytester: pytest.Pytester) -> None:
    """The experiment's item fails with the one line; the other items run and pass, also under xdist."""
    files, arguments, line = LOAD_CASES[case]
    _setup(project, pytester)
    for name, text in files.items():
        project.write(f"flows/bad/{name}", text)
    flow = arguments.removeprefix('flow="').removesuffix('"')
    experiment = BAD_EXPERIMENT.replace("flow: ../flows/clf", f"flow: ../{flow}", 1)
    project.experiment(experiment.replace("variants:\n  nodes:\n    classify: [variant_0]\n", ""), folder="bad")
    _check(run(pytester, *options.split()), line, passed=3)


@pytest.mark.parametrize("option", ["--tb=long", "-vv"])
def test_traceback_when_asked(option: str, project: Project, pytester: pytest.Pytester) -> None:
    """-vv or --tb=long shows the original exception's traceback below the line."""
    _bad_flow_project("python node raises at import", project, pytester)
    result = run(pytester, option)
    result.stdout.fnmatch_lines([LOAD_CASES["python node raises at import"][2], "*Traceback*",
                                 '*raise RuntimeError("broken at import")*'])
    assert outcomes(result) == {"passed": 4, "errors": 1}


@pytest.mark.parametrize("role", ["flow", "evaluator"])
def test_experiment_whose_flow_does_not_load(role: str, project: Project, pytester: pytest.Pytester) -> None:
    """The experiment's items fail with the one line, whether its flow or its evaluator cannot load."""
    files, _, line = LOAD_CASES["python node raises at import"]
    _setup(project, pytester)
    for name, text in files.items():
        project.write(f"flows/bad/{name}", text)
    old = "flow: ../flows/clf" if role == "flow" else "flow: ../flows/ev"
    experiment = BAD_EXPERIMENT.replace(old, "flow: ../flows/bad", 1)
    if role == "flow":  # flows/bad has no variants
        experiment = experiment.replace("variants:\n  nodes:\n    classify: [variant_0]\n", "")
    project.experiment(experiment, folder="bad")
    result = run(pytester)
    _check(result, line, passed=3)


def _outside(pytester: pytest.Pytester) -> str:
    """A folder beside the project (outside its root) holding a dataset and a DAG flow; its path."""
    outside = pytester.path.parent / f"{pytester.path.name}-outside"
    outside_project = Project(pytester)
    outside_project.path = outside
    outside_project.data("secret")
    outside_project.dag_flow("clf")
    outside_project.eval_flow("ev")
    return str(outside)


#: case -> (experiment line, its replacement ({outside}: the folder beside the project), the expected line)
OUTSIDE_EXPERIMENT_CASES = {
    "data": (
        "  source: ../data/small.jsonl", "  source: {outside}/data/secret.jsonl",
        "*bad/experiment.yaml:5: dataset 'small': source *-outside/data/secret.jsonl is outside the project root *; "
        "move it inside, or pass --promptflow-allow-outside-root*",
    ),
    "relative data": (
        "  source: ../data/small.jsonl", "  source: ../../{name}-outside/data/secret.jsonl",
        "*bad/experiment.yaml:5: dataset 'small': source *-outside/data/secret.jsonl is outside the project root*",
    ),
    "data through a symlink": (
        "  source: ../data/small.jsonl", "  source: ../data/link.jsonl",
        "*bad/experiment.yaml:5: dataset 'small': source *data/link.jsonl is outside the project root*",
    ),
    "flow": (
        "flow: ../flows/clf", "flow: {outside}/flows/clf",
        "*bad/experiment.yaml:2: flow *-outside/flows/clf is outside the project root*",
    ),
    "evaluator": (
        "  flow: ../flows/ev", "  flow: {outside}/flows/ev",
        "*bad/experiment.yaml:10: evaluator 'acc' flow *-outside/flows/ev is outside the project root*",
    ),
}


@pytest.mark.parametrize("case", list(OUTSIDE_EXPERIMENT_CASES))
def test_experiment_path_outside_the_project_root(case: str, project: Project, pytester: pytest.Pytester) -> None:
    """Refused in one line on that experiment's item; the others pass; the option lets it run."""
    old, new, line = OUTSIDE_EXPERIMENT_CASES[case]
    _setup(project, pytester)
    outside = _outside(pytester)
    (pytester.path / "data" / "link.jsonl").symlink_to(f"{outside}/data/secret.jsonl")
    project.experiment(BAD_EXPERIMENT.replace(old, new.format(outside=outside, name=pytester.path.name), 1),
                       folder="bad")
    _check(run(pytester), line, passed=3)
    assert outcomes(run(pytester, "--promptflow-allow-outside-root")) == {"passed": 4}


#: case -> (the marker's arguments, the test's body, the expected line)
OUTSIDE_MARKER_CASES = {
    "data": ('flow=echo, data="{outside}/data/secret.jsonl"', "pass",
             "*test_bad.py:*: dataset 'secret': source *-outside/data/secret.jsonl is outside the project root *; "
             "move it inside, or pass --promptflow-allow-outside-root*"),
    "flow": ('flow="{outside}/flows/clf", data="data/small.jsonl"', "pass",
             "*test_bad.py:*: flow *-outside/flows/clf is outside the project root*"),
    "evaluator": ('flow=echo, data="data/small.jsonl"',
                  'flow_run.evaluate("{outside}/flows/ev", mapping={{"groundtruth": "${{data.label}}", '
                  '"prediction": "${{data.label}}"}})',
                  "*test_bad.py:*: evaluator *-outside/flows/ev is outside the project root*"),
    "additional include": ('flow="flows/inc", data="data/small.jsonl"', "pass",
                           "*flows/inc/flow.dag.yaml:2: flow inc: additional include *-outside/data/secret.jsonl is "
                           "outside the project root*"),
}


@pytest.mark.parametrize("case", list(OUTSIDE_MARKER_CASES))
def test_marker_path_outside_the_project_root(case: str, project: Project, pytester: pytest.Pytester) -> None:
    arguments, body, line = OUTSIDE_MARKER_CASES[case]
    _setup(project, pytester)
    outside = _outside(pytester)
    project.write("flows/inc/flow.dag.yaml", f"additional_includes:\n- {outside}/data/secret.jsonl\n{ONE_NODE_DAG}")
    project.write("flows/inc/n1.py", ECHO_NODE)
    _bad_test_beside_a_good_one(pytester, arguments.format(outside=outside), body.format(outside=outside))
    _check(run(pytester), line, passed=4)
    pytester.makeini("[pytest]\npromptflow_allow_outside_root = true\n")
    assert outcomes(run(pytester)) == {"passed": 5}
