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
}


@pytest.mark.parametrize("case", list(MARKER_CASES))
def test_bad_marker(case: str, project: Project, pytester: pytest.Pytester) -> None:
    arguments, line = MARKER_CASES[case]
    _setup(project, pytester)
    pytester.makepyfile(test_bad=f"""
        import pytest

        def echo(text):
            return {{"text": text}}

        @pytest.mark.promptflow(flow=echo, data="data/small.jsonl")
        def test_neighbour(flow_run):
            assert len(flow_run.rows) == 4

        @pytest.mark.promptflow({arguments})
        def test_bad(flow_run):
            pass
    """)
    result = run(pytester)
    # the good experiment, both tests of test_good.py and the bad test's neighbour in its own module
    _check(result, line, passed=4)
