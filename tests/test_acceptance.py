"""What a user sees: items per cell, strategies, experiment.yaml verdicts, evaluators, metrics, xdist.

Every flow here is pure Python (see conftest.py), so no model server is started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import (AGGREGATE_PY, EXPERIMENT, HARD, SMALL, WITH_BOOM, Project, junit_properties, jsonl, outcomes,
                      run)

from pytest_promptflow.stats import wilson


def _ids(items: list[pytest.Item], function: str) -> list[str]:
    return [item.name.partition("[")[2].rstrip("]") for item in items if item.originalname == function]


# --- ids, -k, strategies, narrowing ----------------------------------------------------------


def test_ids_are_readable_and_k_selects_cells(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.data("small")
    project.data("hard", HARD)
    pytester.makepyfile(test_cells="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data=["data/small.jsonl", "data/hard.jsonl"],
                                variants={"classify": "*"},
                                overrides={"nodes.classify.inputs.temperature": [0.0, 0.7]})
        def test_rows(flow_run):
            assert len(flow_run.rows) in (2, 4)
            assert all(row.outputs for row in flow_run.rows)
    """)
    result = run(pytester, "--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "test_cells.py::test_rows[clf-classify=variant_0-temperature=0.0-small]",
        "test_cells.py::test_rows[clf-classify=variant_1-temperature=0.7-hard]",
        "8 tests collected*",
    ])
    result = run(pytester, "-v", "-k", "variant_1 and hard")
    result.assert_outcomes(passed=2, deselected=6)
    result.stdout.fnmatch_lines([
        "*test_rows?clf-classify=variant_1-temperature=0.0-hard? PASSED*",
        "*test_rows?clf-classify=variant_1-temperature=0.7-hard? PASSED*",
    ])


def test_strategies_give_the_expected_cells(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.data("small")
    pytester.makepyfile(test_strategies="""
        import pytest

        ARGS = dict(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*", "decorate": "*"},
                    overrides={"nodes.classify.inputs.temperature": [0.0, 0.7]})

        @pytest.mark.promptflow(**ARGS)
        def test_matrix(flow_run):
            pass

        @pytest.mark.promptflow(strategy="one_at_a_time", **ARGS)
        def test_one(flow_run):
            pass

        @pytest.mark.promptflow(strategy="defaults", **ARGS)
        def test_defaults(flow_run):
            pass
    """)
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider")
    assert len(_ids(items, "test_matrix")) == 2 * 2 * 2
    assert _ids(items, "test_one") == [
        "clf-classify=variant_0-decorate=plain-small",
        "clf-classify=variant_1-decorate=plain-small",
        "clf-classify=variant_0-decorate=lower-small",
        "clf-classify=variant_0-decorate=plain-temperature=0.0-small",
        "clf-classify=variant_0-decorate=plain-temperature=0.7-small",
    ]
    assert _ids(items, "test_defaults") == ["clf-classify=variant_0-decorate=plain-small"]


def test_promptflow_variants_option_narrows_the_cells(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.data("small")
    pytester.makepyfile(test_narrow="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*", "decorate": "*"})
        def test_cells(flow_run):
            pass
    """)
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider", "--promptflow-variants", "classify=variant_1")
    assert _ids(items, "test_cells") == ["clf-classify=variant_1-decorate=plain-small",
                                         "clf-classify=variant_1-decorate=lower-small"]
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider",
                                        "--promptflow-variants", "classify=variant_1,decorate=lower")
    assert _ids(items, "test_cells") == ["clf-classify=variant_1-decorate=lower-small"]


# --- experiment.yaml ---------------------------------------------------------------------------


def test_experiment_with_variants_and_thresholds_passes_and_fails_cells(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.experiment(EXPERIMENT)
    result = run(pytester, "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*experiment.yaml::clf?clf-classify=variant_0-small? PASSED*",
        "*experiment.yaml::clf?clf-classify=variant_1-small? FAILED*",
    ])
    result.stdout.fnmatch_lines([
        "*1 of 2 thresholds failed for cell clf-classify=variant_1-small (4 rows)*",
        "*metric*value*threshold*verdict*",
        "*accuracy*0.5*>= *FAIL*",
        "*error_rate*0*<= 0*ok*",
        "*worst rows:*",
        "*row 1: score 0*bad day*positive*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*.py:[0-9]*: *Failure*")


TEMPLATE_EXPERIMENT = """\
name: clf_template
flow: ../flows/clf
connections: []
runtime: my-runtime
datasets:
- name: small
  source: small.jsonl
  description: rows the flow runs on
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: ../flows/ev
  datasets:
  - name: small_truth
    reference: small
    source: small_truth.jsonl
    description: ground truth for small, row by row
    mappings:
      groundtruth: "${data.truth}"
      prediction: "${target.category}"
"""


def test_template_experiment_without_our_keys_runs_and_passes(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.write("exp/small.jsonl", jsonl({"text": r["text"]} for r in SMALL))
    project.write("exp/small_truth.jsonl", jsonl({"truth": r["label"]} for r in SMALL))
    project.experiment(TEMPLATE_EXPERIMENT)
    result = run(pytester, "-v", "--junitxml=report.xml")
    # no variants key: the template's matrix, every node with variants swapped one at a time
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*clf_template?clf-classify=variant_0-decorate=plain-small? PASSED*",
        "*clf_template?clf-classify=variant_1-decorate=plain-small? PASSED*",
        "*clf_template?clf-classify=variant_0-decorate=lower-small? PASSED*",
    ])
    properties = junit_properties(pytester.path / "report.xml")
    assert float(properties["clf_template[clf-classify=variant_0-decorate=plain-small]"]["promptflow.accuracy"]) == 1.0
    assert float(properties["clf_template[clf-classify=variant_1-decorate=plain-small]"]["promptflow.accuracy"]) == 0.5


def test_each_flow_configuration_loads_once_across_datasets_and_scored_cells(
        project: Project, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 cells (2 variants x 2 datasets) and 4 evaluations of them: 2 executors of the flow and 1 of the
    evaluation flow, not 8; the verdicts are what they were."""
    from promptflow.executor import FlowExecutor

    made: list[str] = []
    create = FlowExecutor.create

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(Path(kwargs["working_dir"]).name)
        return create(*args, **kwargs)

    monkeypatch.setattr(FlowExecutor, "create", counted)
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.data("tiny", HARD)
    project.experiment(EXPERIMENT.replace("""\
- name: small
  source: ../data/small.jsonl
  mappings:
    text: "${data.text}"
""", """\
- name: small
  source: ../data/small.jsonl
  mappings:
    text: "${data.text}"
- name: tiny
  source: ../data/tiny.jsonl
  mappings:
    text: "${data.text}"
""").replace("""\
  - name: small
    mappings:
""", """\
  - name: small
    mappings:
      groundtruth: "${data.label}"
      prediction: "${run.outputs.category}"
  - name: tiny
    reference: tiny
    mappings:
""").replace('  accuracy: ">= 0.75"\n', '  accuracy: ">= 0.5"\n'))
    result = run(pytester, "--junitxml=report.xml")
    result.assert_outcomes(passed=4)
    assert sorted(made) == ["clf", "clf", "ev"]
    properties = junit_properties(pytester.path / "report.xml")
    accuracy = {cell.removeprefix("clf[clf-classify=").rstrip("]"): float(values["promptflow.accuracy"])
                for cell, values in properties.items()}
    assert accuracy == {"variant_0-small": 1.0, "variant_1-small": 0.5, "variant_0-tiny": 0.5, "variant_1-tiny": 0.5}


def test_a_flow_configuration_loads_again_with_another_variant_or_connection(project: Project) -> None:
    """Connections are resolved afresh per cell: one that moved (the embedded model started again elsewhere)
    gets an executor of its own."""
    from promptflow.connections import AzureOpenAIConnection

    from pytest_promptflow.flows import Executors, load_target

    target = load_target(project.dag_flow(), project.path, None)
    executors = Executors()

    def executor(variant: str, port: int) -> Any:
        connection = AzureOpenAIConnection(api_key="k", api_base=f"http://127.0.0.1:{port}/")
        return executors.get(target, {"classify": variant}, {}, {"aoai": connection})

    first = executor("variant_0", 1)
    assert executor("variant_0", 1) is first
    assert executor("variant_0", 2) is not first
    assert executor("variant_1", 1) is not first


def test_overlay_replaces_datasets_and_empty_evaluators_clear(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.data("tiny", HARD)
    project.experiment(EXPERIMENT)
    project.experiment("""\
        datasets:
        - name: tiny
          source: ../data/tiny.jsonl
        evaluators:
        thresholds:
          error_rate: "<= 0"
    """, name="experiment.pr.yaml")
    result = run(pytester, "-v", "--promptflow-env", "pr", "--junitxml=report.xml")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*experiment.yaml::clf?clf-classify=variant_0-tiny? PASSED*",
        "*experiment.yaml::clf?clf-classify=variant_1-tiny? PASSED*",
    ])
    result.stdout.no_fnmatch_line("*-small*")
    properties = junit_properties(pytester.path / "report.xml")["clf[clf-classify=variant_0-tiny]"]
    assert float(properties["promptflow.rows"]) == 2
    assert not [name for name in properties if "accuracy" in name or "score" in name]
    # without the overlay the base file is used
    result = run(pytester, "-v")
    result.assert_outcomes(passed=1, failed=1)


def _envs_project(project: Project) -> None:
    """Two experiments, one with a ``pr`` overlay, and a deployment entry for ``prod``."""
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.experiment(EXPERIMENT)
    project.experiment("thresholds:\n  error_rate: '<= 0'\n", name="experiment.pr.yaml")
    project.experiment(EXPERIMENT.replace("name: clf", "name: other"), folder="exp2")
    project.write("deployment_config.json", json.dumps({"local_endpoint": [{"ENV_NAME": "prod"}]}))


def test_an_env_no_overlay_and_no_deployment_entry_knows_is_a_usage_error(
        project: Project, pytester: pytest.Pytester) -> None:
    """A typo in --promptflow-env would run the base experiments and deploy with default settings."""
    _envs_project(project)
    result = run(pytester, "--collect-only", "-q", "--promptflow-env", "prdo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-promptflow: --promptflow-env 'prdo' matches no overlay *; "
                                 "envs that exist: pr, prod"])
    for env in ("pr", "prod"):  # one env serves every use case when one file or entry knows it
        result = run(pytester, "--collect-only", "-q", "--promptflow-env", env)
        assert result.ret == 0, result.stderr.str()
        result.stdout.fnmatch_lines(["exp/experiment.yaml::clf*", "exp2/experiment.yaml::other*"], consecutive=False)


def test_an_unknown_env_is_a_usage_error_under_xdist_too(project: Project, pytester: pytest.Pytester) -> None:
    """The xdist controller collects nothing: it checks the experiment files the workers' ids name."""
    _envs_project(project)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--promptflow-env", "prdo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-promptflow: --promptflow-env 'prdo' *envs that exist: pr, prod"])


# --- rows, metrics, evaluators -------------------------------------------------------------------


def test_a_row_that_raises_is_an_error_row_and_the_rest_still_pass(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.data("boom", WITH_BOOM)
    pytester.makepyfile(test_errors="""
        import pytest

        def classify(text):
            if "boom" in text:
                raise ValueError("boom row")
            return {"category": "positive" if "good" in text else "negative"}

        def same(prediction, label):
            return {"match": float(prediction == label)}

        @pytest.mark.promptflow(flow=classify, data="data/boom.jsonl")
        def test_callable(flow_run):
            assert flow_run.metrics["error_rate"] == pytest.approx(0.2)
            failed = [row for row in flow_run.rows if row.failed]
            assert [(row.index, row.error_type, row.error_message) for row in failed] == [(4, "ValueError", "boom row")]
            result = flow_run.evaluate(same, mapping={"prediction": "${run.outputs.category}", "label": "${data.label}"})
            # 4 answered rows all match; the row that raised is not judged and scores the worst value, 0
            assert result.metrics["match"] == pytest.approx((4 * 1.0 + 0.0) / 5)
            assert result.metrics["error_rate"] > 0
            assert result.scores[4] == {"match": 0.0} and result.evaluation.errors[4] == "flow row failed"
            # the interval rests on every row, the failed one at its worst: 4 of 5, and 1 error in 5
            from pytest_promptflow.stats import wilson
            assert result.metrics["match"].values == (1.0, 1.0, 1.0, 1.0, 0.0)
            assert result.metrics["match"].ci() == result.metrics["same.match"].ci() == wilson(4, 5)
            assert result.metrics["error_rate"].ci(0.9, sides=1) == wilson(1, 5, 0.9, sides=1)

        @pytest.mark.promptflow(flow="flows/clf", data="data/boom.jsonl", variants={"classify": ["variant_0"]})
        def test_dag(flow_run):
            assert flow_run.metrics["error_rate"] == pytest.approx(0.2)
            assert [row.failed for row in flow_run.rows] == [False, False, False, False, True]
            assert "boom row" in flow_run.rows[4].error_message
            assert flow_run.outputs[0] == {"category": "positive"}
    """)
    result = run(pytester, "-v")
    result.assert_outcomes(passed=2)


def test_python_api_assertion_failure_names_metric_value_threshold_cell_and_rows(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    pytester.makepyfile(test_api="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"})
        def test_accuracy(flow_run):
            result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                            "prediction": "${run.outputs.category}"})
            assert result.metrics["accuracy"] >= 0.75
    """)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "E * accuracy 0.5 >= 0.75 failed for cell clf-classify=variant_1-small (4 rows)*",
        "E * metric * value * threshold * verdict*",
        "E * accuracy * 0.5 * >= 0.75 * FAIL*",
        "*",
        "test_api.py:*: AssertionError",
        "*- promptflow -*",
        "worst rows:",
    ])


def test_evaluators_callable_azure_f1_and_dag_with_log_metric(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    pytester.makepyfile(test_evaluators="""
        import pytest
        from azure.ai.evaluation import F1ScoreEvaluator

        MAPPING = {"prediction": "${run.outputs.category}", "groundtruth": "${data.label}"}

        def exact(prediction, groundtruth):
            return {"exact": float(prediction == groundtruth), "length": len(prediction)}

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": ["variant_1"]})
        def test_callable(flow_run):
            result = flow_run.evaluate(exact, mapping=MAPPING)
            assert result.metrics["exact"] == 0.5
            assert result.metrics["length"] == 8.0  # len("positive"), every row
            assert result.scores[1] == {"exact": 0.0, "length": 8}

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": ["variant_1"]})
        def test_f1(flow_run):
            result = flow_run.evaluate(F1ScoreEvaluator(), mapping={"response": "${run.outputs.category}",
                                                                   "ground_truth": "${data.label}"})
            assert result.metrics["f1_score"] == 0.5
            assert "f1_score_pass_rate" in result.metrics

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": ["variant_1"]})
        def test_dag(flow_run):
            result = flow_run.evaluate("flows/ev", mapping=MAPPING)
            assert result.metrics["accuracy"] == 0.5
            assert result.metrics["score"] == 0.5
            assert [s["score"] for s in result.scores] == [1, 0, 1, 0]
    """)
    result = run(pytester, "-v")
    result.assert_outcomes(passed=3)


def test_builtin_metrics_exist(project: Project, pytester: pytest.Pytester) -> None:
    project.data("small")
    pytester.makepyfile(test_builtin="""
        import pytest

        def echo(text):
            return {"text": text}

        @pytest.mark.promptflow(flow=echo, data="data/small.jsonl")
        def test_metrics(flow_run):
            metrics = flow_run.metrics
            assert metrics["error_rate"] == 0.0
            assert 0 <= metrics["latency.mean"] <= metrics["latency.p95"]
            assert metrics["latency.p95"] == max(row.latency for row in flow_run.rows)
            result = flow_run.evaluate(lambda text: {"len": len(text)}, mapping={"text": "${data.text}"})
            assert {"error_rate", "latency.mean", "latency.p95", "len"} <= set(result.metrics)
    """)
    run(pytester).assert_outcomes(passed=1)


CALLS = """\
import json

import pytest

def classify(text):
    with open("calls.txt", "a") as calls:
        calls.write(text + "\\n")
    return {"category": "positive" if "good" in text else "negative"}
"""


def test_a_cell_used_by_two_tests_runs_once(project: Project, pytester: pytest.Pytester) -> None:
    project.data("small")
    project.data("hard", HARD)
    pytester.makepyfile(test_twice=CALLS + """
ARGS = dict(flow=classify, data=["data/small.jsonl", "data/hard.jsonl"])

@pytest.mark.promptflow(**ARGS)
def test_first(flow_run):
    assert len(flow_run.rows) in (2, 4)

@pytest.mark.promptflow(**ARGS)
def test_second(flow_run):
    assert len(flow_run.rows) in (2, 4)
""")
    run(pytester).assert_outcomes(passed=4)
    calls = (pytester.path / "calls.txt").read_text().splitlines()
    assert sorted(calls) == sorted(r["text"] for r in SMALL + HARD)


def test_different_flows_with_the_same_name_are_different_cells(
        project: Project, pytester: pytest.Pytester) -> None:
    """An old and a new implementation compared on the same data must not share a run."""
    project.data("small")
    pytester.makepyfile(
        test_old="""
            import pytest

            def classify(text):
                return {"category": "old"}

            @pytest.mark.promptflow(flow=classify, data="data/small.jsonl")
            def test_old(flow_run):
                assert flow_run.outputs[0] == {"category": "old"}
        """,
        test_new="""
            import pytest

            def classify(text):
                return {"category": "new"}

            @pytest.mark.promptflow(flow=classify, data="data/small.jsonl")
            def test_new(flow_run):
                assert flow_run.outputs[0] == {"category": "new"}
        """,
    )
    run(pytester).assert_outcomes(passed=2)


def test_flow_folders_with_the_same_name_are_different_cells(project: Project, pytester: pytest.Pytester) -> None:
    project.flex_function("v1/classify", module="v1entry", word="good", inputs=True)
    project.flex_function("v2/classify", module="v2entry", word="bad", inputs=True)
    project.data("small")
    pytester.makepyfile(test_versions="""
        import pytest

        @pytest.mark.promptflow(flow="flows/v1/classify", data="data/small.jsonl")
        def test_v1(flow_run):
            assert flow_run.outputs[0] == {"category": "positive"}

        @pytest.mark.promptflow(flow="flows/v2/classify", data="data/small.jsonl")
        def test_v2(flow_run):
            assert flow_run.outputs[0] == {"category": "negative"}
    """)
    run(pytester).assert_outcomes(passed=2)


# --- flex flows --------------------------------------------------------------------------------


def test_flex_function_flow_with_entry_only(project: Project, pytester: pytest.Pytester) -> None:
    """flow.flex.yaml with just ``entry: mod:func`` (inputs come from the function's signature)."""
    project.flex_function()
    project.data("small")
    pytester.makepyfile(test_flex="""
        import pytest

        @pytest.mark.promptflow(flow="flows/flexfn", data="data/small.jsonl")
        def test_flex(flow_run):
            assert [row.error_message for row in flow_run.rows] == [None] * 4
            assert flow_run.outputs[0] == {"category": "positive"}
    """)
    run(pytester).assert_outcomes(passed=1)


def test_flex_flows_function_and_class_with_init(project: Project, pytester: pytest.Pytester) -> None:
    project.flex_function(inputs=True)
    project.flex_class(inputs=True)
    project.data("small")
    pytester.makepyfile(test_flex="""
        import pytest

        @pytest.mark.promptflow(flow="flows/flexfn", data="data/small.jsonl")
        def test_function(flow_run):
            assert [o["category"] for o in flow_run.outputs] == ["positive", "negative", "positive", "negative"]

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl", init={"word": "bad"})
        def test_class(flow_run):
            assert [o["category"] for o in flow_run.outputs] == ["negative", "positive", "negative", "negative"]
    """)
    run(pytester, "-v").assert_outcomes(passed=2)


def test_class_flow_cells_differ_by_init(project: Project, pytester: pytest.Pytester) -> None:
    project.flex_class(inputs=True)
    project.data("small")
    pytester.makepyfile(test_init="""
        import pytest

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl", init={"word": "good"})
        def test_good(flow_run):
            assert flow_run.outputs[0] == {"category": "positive"}

        @pytest.mark.promptflow(flow="flows/flexcls", data="data/small.jsonl", init={"word": "bad"})
        def test_bad(flow_run):
            assert flow_run.outputs[0] == {"category": "negative"}
    """)
    run(pytester).assert_outcomes(passed=2)


def test_a_flex_class_instance_is_its_cells_own(project: Project, pytester: pytest.Pytester) -> None:
    """A flex class may keep state across its rows; the same configuration on another dataset starts afresh."""
    project.write("flows/counter/flow.flex.yaml", "entry: counting:Counter\ninputs:\n  text:\n    type: string\n")
    project.write("flows/counter/counting.py", """\
class Counter:
    def __init__(self):
        self.seen = 0

    def __call__(self, text: str) -> dict:
        self.seen += 1
        return {"seen": self.seen}
""")
    project.data("small")
    project.data("tiny", HARD)
    pytester.makepyfile(test_counter="""
        import pytest

        @pytest.mark.promptflow(flow="flows/counter", data=["data/small.jsonl", "data/tiny.jsonl"])
        def test_counts(flow_run):
            assert sorted(o["seen"] for o in flow_run.outputs) == list(range(1, len(flow_run.outputs) + 1))
    """)
    run(pytester, "--promptflow-concurrency", "1").assert_outcomes(passed=2)


def test_two_flex_flows_with_the_same_module_name(project: Project, pytester: pytest.Pytester) -> None:
    """promptflow samples name their entry module flow.py; each folder's own module must run."""
    project.flex_function("first", module="flow", word="good", inputs=True)
    project.flex_function("second", module="flow", word="bad", inputs=True)
    project.data("small")
    pytester.makepyfile(test_modules="""
        import pytest

        @pytest.mark.promptflow(flow="flows/first", data="data/small.jsonl")
        def test_first(flow_run):
            assert flow_run.outputs[0] == {"category": "positive"}

        @pytest.mark.promptflow(flow="flows/second", data="data/small.jsonl")
        def test_second(flow_run):
            assert flow_run.outputs[0] == {"category": "negative"}
    """)
    run(pytester).assert_outcomes(passed=2)


# --- xdist -------------------------------------------------------------------------------------


def test_xdist_gives_the_same_outcomes_as_serial(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.data("hard", HARD)
    project.experiment(EXPERIMENT)
    pytester.makepyfile(test_suite="""
        import pytest

        def classify(text):
            return {"category": "positive" if "good" in text else "negative"}

        def same(category, label):
            return {"match": float(category == label)}

        @pytest.mark.promptflow(flow=classify, data=["data/small.jsonl", "data/hard.jsonl"])
        def test_match(flow_run):
            result = flow_run.evaluate(same, mapping={"category": "${run.outputs.category}", "label": "${data.label}"})
            assert result.metrics["match"] >= 0.75
    """)
    serial = outcomes(run(pytester))
    assert serial == {"passed": 2, "failed": 2}
    parallel = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert outcomes(parallel) == serial
    parallel.stdout.fnmatch_lines(["*accuracy*0.5*>= *FAIL*"])
    parallel.stdout.fnmatch_lines(["*match 0.5 >= 0.75 failed for cell classify-hard (2 rows)*"])


def test_two_flows_with_one_name_get_tables_of_their_own(project: Project, pytester: pytest.Pytester) -> None:
    """flows/basic and flows/v2/basic must not share a table, a best configuration or a release."""
    project.dag_flow("basic")
    project.flex_function("v2/basic", module="v2entry", inputs=True)
    project.data("small")
    pytester.makepyfile(test_names="""
        import pytest

        @pytest.mark.promptflow(flow="flows/basic", data="data/small.jsonl")
        def test_dag(flow_run):
            assert flow_run.cell.flow == "basic"

        @pytest.mark.promptflow(flow="flows/v2/basic", data="data/small.jsonl")
        def test_flex(flow_run):
            assert flow_run.cell.flow == "flows.v2.basic"
    """)
    result = run(pytester, "-v")
    assert outcomes(result) == {"passed": 2}, result.stdout.str()
    result.stdout.fnmatch_lines(["*test_flex[[]flows.v2.basic-small[]] PASSED*"])
    result.stdout.fnmatch_lines(["promptflow: flow basic, 1 cell*", "promptflow: flow flows.v2.basic, 1 cell*"],
                                consecutive=False)


# --- confidence levels: "at 95%" thresholds, flow_run.expect, intervals in the reports -------------------------

#: 20 rows: the keyword classifier (variant_0) gets all right, the "always positive" one (variant_1) 17 of 20.
MOSTLY_POSITIVE = [{"text": f"good {i}", "label": "positive"} for i in range(17)] + [
    {"text": f"bad {i}", "label": "negative"} for i in range(3)]


def test_a_threshold_at_95_percent_gates_on_the_bound_not_the_point(
        project: Project, pytester: pytest.Pytester) -> None:
    """variant_1 scores 0.85 >= 0.8, but 17 of 20 has a one-sided 95% lower bound of about 0.65: it fails."""
    project.dag_flow()
    project.eval_flow()
    project.data("small", MOSTLY_POSITIVE)
    project.experiment(EXPERIMENT.replace('  accuracy: ">= 0.75"\n', '  score: ">= 0.8 at 95%"\n'))
    result = run(pytester, "-v", "--promptflow-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*clf-classify=variant_0-small? PASSED*", "*clf-classify=variant_1-small? FAILED*"])
    bound = wilson(17, 20, 0.95, sides=1).low
    result.stdout.fnmatch_lines([
        "*1 of 2 thresholds failed for cell clf-classify=variant_1-small (20 rows)*",
        "*metric*value*threshold*bound*verdict*",
        f"*score*0.85*>= 0.8 at 95%*{bound:.4g} (lower, 95%)*FAIL*",
        "*error_rate*0*<= 0*-*ok*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    document = json.loads((pytester.path / "out" / "report.json").read_text(encoding="utf-8"))
    cell = {c["cell"]: c for c in document["flows"][0]["cells"]}["clf-classify=variant_1-small"]
    verdict = next(v for v in cell["verdicts"] if v["metric"] == "score")
    assert (verdict["level"], verdict["passed"], verdict["actual"]) == (0.95, False, 0.85)
    assert verdict["bound"] == pytest.approx(bound)
    two_sided = wilson(17, 20)
    assert [cell["intervals"][f"score.{f}"] for f in ("ci_low", "ci_high", "n")] == pytest.approx(
        [two_sided.low, two_sided.high, 20])
    assert cell["intervals"]["score.se"] == pytest.approx(two_sided.se)
    assert cell["intervals"]["error_rate.ci_high"] == pytest.approx(wilson(0, 20).high)
    # the aggregation's log_metric accuracy: a percentile interval from re-running it on resampled lines
    assert 0 < cell["intervals"]["accuracy.ci_low"] < 0.85 < cell["intervals"]["accuracy.ci_high"] <= 1
    result.stdout.fnmatch_lines(["*classify=variant_1-small*FAIL score >= 0.8 at 95%"])  # the terminal table
    metrics_csv = (pytester.path / "out" / "metrics.csv").read_text(encoding="utf-8")
    assert "score >= 0.8 at 95%" in metrics_csv  # the failed threshold, with its level


EXPECT_TESTS = """
    import pytest

    @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"})
    def test_expect(flow_run):
        flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"})
        flow_run.expect("error_rate <= 0.2 at 95%")
        flow_run.expect("score >= 0.8 at 95%")
        flow_run.expect("error_rate <= 0")  # not reached when the line above fails
"""


def test_flow_run_expect_fails_with_the_failure_table_and_records_its_verdicts(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small", MOSTLY_POSITIVE)
    pytester.makepyfile(test_expect=EXPECT_TESTS)
    result = run(pytester, "-v", "--promptflow-report", "out", "--junitxml=junit.xml")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_expect?clf-classify=variant_0-small? PASSED*",
                                 "*test_expect?clf-classify=variant_1-small? FAILED*"])
    bound = wilson(17, 20, 0.95, sides=1).low
    result.stdout.fnmatch_lines([  # the table experiment.yaml items print
        "*1 of 1 thresholds failed for cell clf-classify=variant_1-small (20 rows)*",
        "*metric*value*threshold*bound*verdict*",
        f"*score*0.85*>= 0.8 at 95%*{bound:.4g} (lower, 95%)*FAIL*",
        "*worst rows:*",
        "*row 17: score 0*bad 0*positive*",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*results.py*")
    document = json.loads((pytester.path / "out" / "report.json").read_text(encoding="utf-8"))
    cells = {c["cell"]: c for c in document["flows"][0]["cells"]}
    assert [(v["metric"], v["op"], v["level"], v["passed"]) for v in cells["clf-classify=variant_1-small"]["verdicts"]
            ] == [("error_rate", "<=", 0.95, True), ("score", ">=", 0.95, False)]
    assert [v["passed"] for v in cells["clf-classify=variant_0-small"]["verdicts"]] == [True, True, True]
    properties = junit_properties(pytester.path / "junit.xml")["test_expect[clf-classify=variant_1-small]"]
    assert float(properties["promptflow.ev.score.ci_low"]) == pytest.approx(wilson(17, 20).low, abs=1e-6)
    assert properties["promptflow.ev.score.n"] == "20" or float(properties["promptflow.ev.score.n"]) == 20
    assert float(properties["promptflow.error_rate.ci_high"]) == pytest.approx(wilson(0, 20).high, abs=1e-6)
    # the logged accuracy is the mean of score: score's interval
    assert float(properties["promptflow.ev.accuracy.ci_low"]) == pytest.approx(wilson(17, 20).low, abs=1e-6)


#: an aggregation too slow to re-run on 200 resamples (more than 10 s in all): its logged count (no column's
#: mean, unlike its accuracy) has no interval
SLOW_AGGREGATE_PY = AGGREGATE_PY.replace("    accuracy = ", "    time.sleep(0.06)\n    accuracy = ").replace(
    "from typing", "import time\nfrom typing").replace(
    '    log_metric("accuracy", accuracy)\n', '    log_metric("accuracy", accuracy)\n'
    '    log_metric("misses", len(scores) - sum(scores))\n')


def test_flow_run_expect_on_an_unknown_metric_or_a_level_with_no_interval_is_one_line(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.write("flows/ev/aggregate.py", SLOW_AGGREGATE_PY)
    project.data("small")
    pytester.makepyfile(test_expect="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
        def test_unknown(flow_run):
            flow_run.expect("acuracy >= 0.8")

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
        def test_logged(flow_run):
            flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                   "prediction": "${run.outputs.category}"})
            flow_run.expect("misses <= 1 at 90%")
    """)
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*test_expect.py:5: threshold on unknown metric 'acuracy'; metrics of this cell: *error_rate*",
        "*test_expect.py:11: misses has no interval (its aggregation took * s, too long to re-run 200 times); "
        "drop 'at 90%' or gate a mean of per-row scores*",
    ], consecutive=False)
    result.stdout.no_fnmatch_line("*Traceback*")
