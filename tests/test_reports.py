"""Reports: merging item records into the document, the best configuration, the terminal table
(pure), and what pytest-html and JUnit files carry for each promptflow item (pytester)."""

from __future__ import annotations

import html
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import EXPERIMENT, HARD, Project, junit_properties, run

from pytest_promptflow.evaluation import MetricValue
from pytest_promptflow.reporting.best import best_configuration, lower_is_better, primary_metric
from pytest_promptflow.reporting.html_extras import metrics_fragment
from pytest_promptflow.reporting.records import merge, plain
from pytest_promptflow.reporting.terminal import comparison_tables


def record(cell: str, nodeid: str, metrics: dict[str, float], *, outcome: str = "passed", flow: str = "clf",
           config: str | None = None, dataset: str | None = None, default: bool = False,
           verdicts: tuple[dict[str, Any], ...] = (), scores: tuple[dict[str, Any], ...] = (),
           intervals: dict[str, float | None] | None = None) -> dict[str, Any]:
    """An item's record as records.item_record builds it; ``cell`` is the id without the flow."""
    dataset = dataset or cell.rpartition("-")[2]
    config = config or cell.removesuffix(dataset).rstrip("-") or "defaults"
    return {
        "flow": flow, "cell": f"{flow}-{cell}", "config": config, "variants": {}, "default": default,
        "overrides": {}, "dataset": dataset, "dataset_path": f"data/{dataset}.jsonl", "dataset_hash": "",
        "items": [{"nodeid": nodeid, "outcome": outcome}],
        "verdicts": [dict(v, item=nodeid) for v in verdicts],
        "metrics": dict(metrics),
        "intervals": dict(intervals or {}),
        "rows": [{"index": i, "data": {}, "inputs": {}, "outputs": {}, "error": None, "latency": 0.1,
                  "cached": False, "llm_calls": 0, "tokens": 0, "cost": 0.0, "scores": dict(s)}
                 for i, s in enumerate(scores)],
    }


def verdict(metric: str, op: str, threshold: float, actual: float) -> dict[str, Any]:
    passed = {">=": actual >= threshold, "<=": actual <= threshold}[op]
    return {"metric": metric, "op": op, "threshold": threshold, "actual": actual, "passed": passed}


def document(*records: dict[str, Any], primary: dict[str, str] | None = None) -> dict[str, Any]:
    return merge(records, primary or {}, {"run_id": "x"})


def cells(doc: dict[str, Any], flow: str = "clf") -> dict[str, dict[str, Any]]:
    return {c["cell"]: c for f in doc["flows"] if f["flow"] == flow for c in f["cells"]}


# --- records.merge ----------------------------------------------------------------------------


def test_merge_joins_the_items_of_a_cell():
    first = record("v0-small", "t.py::test_b[v0-small]", {"rows": 2, "accuracy": 0.5},
                   verdicts=(verdict("accuracy", ">=", 0.75, 0.5),), scores=({"ev.score": 1}, {"ev.score": 0}))
    second = record("v0-small", "t.py::test_a[v0-small]", {"rows": 2, "match": 1.0},
                    scores=({"same.match": 1.0}, {"same.match": 1.0}))
    other = record("v1-small", "t.py::test_a[v1-small]", {"rows": 2})
    doc = document(other, first, second)
    assert [f["flow"] for f in doc["flows"]] == ["clf"]
    assert list(cells(doc)) == ["clf-v0-small", "clf-v1-small"]
    cell = cells(doc)["clf-v0-small"]
    assert cell["items"] == [{"nodeid": "t.py::test_a[v0-small]", "outcome": "passed"},
                             {"nodeid": "t.py::test_b[v0-small]", "outcome": "passed"}]
    assert cell["metrics"] == {"rows": 2, "accuracy": 0.5, "match": 1.0}
    assert [v["item"] for v in cell["verdicts"]] == ["t.py::test_b[v0-small]"]
    assert [row["scores"] for row in cell["rows"]] == [{"ev.score": 1, "same.match": 1.0},
                                                       {"ev.score": 0, "same.match": 1.0}]
    assert doc["environment"] == {"run_id": "x"}


@pytest.mark.parametrize(("outcomes", "worst"), [
    (["passed", "passed"], "passed"),
    (["passed", "skipped"], "skipped"),
    (["skipped", "failed", "passed"], "failed"),
    (["failed", "error"], "error"),
])
def test_a_cell_takes_the_worst_outcome_of_its_items(outcomes, worst):
    doc = document(*(record("v0-small", f"t.py::test_{i}", {"rows": 1}, outcome=o) for i, o in enumerate(outcomes)))
    assert cells(doc)["clf-v0-small"]["outcome"] == worst


def test_merge_takes_the_rows_of_an_item_that_ran():
    """An item that failed before its cell ran has no rows and no metrics; the cell keeps the other's."""
    broken = record("v0-small", "t.py::test_a", {}, outcome="error")
    ran = record("v0-small", "t.py::test_b", {"rows": 2}, scores=({"s": 1}, {"s": 0}))
    cell = cells(document(broken, ran))["clf-v0-small"]
    assert [row["scores"] for row in cell["rows"]] == [{"s": 1}, {"s": 0}]
    assert cell["outcome"] == "error"


def test_merge_does_not_depend_on_the_order_records_arrive_in():
    """xdist hands records to the controller in any order: the document must come out the same."""
    records = [
        record("v0-small", "t.py::test_b[v0-small]", {"error_rate": 0.0, "match": 1.0, "score": 0.9},
               scores=({"same.match": 1.0},)),
        record("v0-small", "t.py::test_a[v0-small]", {"error_rate": 0.0, "accuracy": 0.5, "score": 0.5},
               verdicts=(verdict("accuracy", ">=", 0.75, 0.5),), scores=({"same.match": 0.0, "ev.score": 0},),
               outcome="failed"),
        record("v1-small", "t.py::test_a[v1-small]", {"accuracy": 1.0}, scores=({"ev.score": 1},)),
        record("v1-small", "t.py::test_b[v1-small]", {"match": 1.0}, scores=({"same.match": 1.0},)),
    ]
    documents = {json.dumps(document(*order)) for order in itertools.permutations(records)}
    assert len(documents) == 1
    doc = json.loads(documents.pop())
    assert doc["flows"][0]["primary_metric"] == "accuracy"  # test_a's evaluator: the first item's first metric
    assert cells(doc)["clf-v0-small"]["metrics"]["score"] == 0.5


def test_merge_does_not_change_the_records():
    item = record("v0-small", "t.py::test_a", {"rows": 1}, scores=({"s": 1},))
    before = json.dumps(item)
    document(item, record("v0-small", "t.py::test_b", {"m": 1.0}, scores=({"t": 1},)))
    assert json.dumps(item) == before


def test_records_hold_only_plain_json_types():
    """A verdict's actual is a MetricValue (a float subclass): execnet cannot send it from an xdist worker."""
    metric = MetricValue(0.5, "accuracy", "clf-v0-small", 4)
    value = plain({"actual": metric, "rows": [1, True, None, float("nan")], "path": Path("data")})
    assert value == {"actual": 0.5, "rows": [1, True, None, "nan"], "path": "data"}
    assert type(value["actual"]) is float


# --- best.primary_metric, best.best_configuration -------------------------------------------------


def test_primary_metric_configured_per_flow_or_for_all():
    some = [{"metrics": {"error_rate": 0.0, "accuracy": 0.5}}]
    assert primary_metric("clf", some, {"clf": "f1", "*": "recall"}) == "f1"
    assert primary_metric("other", some, {"clf": "f1", "*": "recall"}) == "recall"
    assert primary_metric("other", some, {"clf": "f1"}) == "accuracy"


def test_primary_metric_is_the_first_evaluator_metric_else_none():
    built_in = {"error_rate": 0.0, "rows": 4.0, "latency.p95": 0.1, "llm.calls": 4.0, "tokens.total": 9.0,
                "cost.total": 0.0}
    assert primary_metric("clf", [{"metrics": built_in}], {}) is None
    cells_ = [{"metrics": built_in}, {"metrics": {**built_in, "ev.accuracy": 0.5, "accuracy": 0.5, "f1": 0.2}}]
    assert primary_metric("clf", cells_, {}) == "accuracy"


@pytest.mark.parametrize(("metric", "lower"), [
    ("accuracy", False), ("error_rate", True), ("latency.p95", True), ("cost.total", True),
    ("tokens.total", True), ("f1_score", False),
])
def test_lower_is_better(metric, lower):
    assert lower_is_better(metric) is lower


def _cells(*specs: tuple[str, str, float | None, str], metric: str = "m") -> list[dict[str, Any]]:
    """(config, dataset, value or None, outcome) -> merged cells of flow clf; v0 has the default variants."""
    records = [record(f"{config}-{dataset}", f"t.py::test[{config}-{dataset}]",
                      {"rows": 1} if value is None else {metric: value}, outcome=outcome, config=config,
                      dataset=dataset, default=config == "v0")
               for config, dataset, value, outcome in specs]
    return list(cells(document(*records)).values())


def test_best_is_the_highest_mean_over_the_datasets():
    found = _cells(("v0", "small", 0.9, "passed"), ("v0", "hard", 0.3, "passed"),
                   ("v1", "small", 0.7, "passed"), ("v1", "hard", 0.6, "passed"))
    best, reason = best_configuration(found, "m")[:2]
    assert best == "v1"
    assert reason == "highest mean m (0.65) over 2 datasets among 2 passing configurations"


def test_best_is_the_lowest_mean_for_lower_is_better_metrics():
    found = _cells(("v0", "small", 0.2, "passed"), ("v1", "small", 0.1, "passed"), ("v2", "small", 0.3, "passed"),
                   metric="latency.p95")
    best, reason = best_configuration(found, "latency.p95")[:2]
    assert best == "v1"
    assert reason == "lowest mean latency.p95 (0.1) among 3 passing configurations"


def test_best_only_among_configurations_that_passed_everything_on_every_dataset():
    found = _cells(
        ("v0", "small", 0.9, "failed"), ("v0", "hard", 0.9, "passed"),  # a failing cell
        ("v1", "small", 0.95, "passed"),  # not scored on hard
        ("v2", "small", 0.5, "passed"), ("v2", "hard", 0.5, "passed"),
        ("v3", "small", 0.4, "passed"), ("v3", "hard", 0.4, "skipped"),  # skipped is not passed
    )
    assert best_configuration(found, "m")[:2] == ("v2", "highest mean m (0.5) over 2 datasets among 1 passing "
                                                    "configuration")


def test_a_failed_cell_without_the_metric_still_disqualifies_its_configuration():
    """A cell whose test failed before the evaluator ran has no primary metric, but it did not pass."""
    found = _cells(("v1", "small", 0.9, "passed"), ("v1", "hard", None, "failed"),
                   ("v2", "small", 0.5, "passed"), ("v2", "hard", None, "passed"))
    assert best_configuration(found, "m")[:2] == ("v2", "highest mean m (0.5) among 1 passing configuration")


def test_a_tie_goes_to_the_default_variants():
    found = _cells(("v1", "small", 0.5, "passed"), ("v0", "small", 0.5, "passed"), ("v2", "small", 0.4, "passed"))
    best, reason = best_configuration(found, "m")[:2]
    assert best == "v0"
    assert reason == "highest mean m (0.5) among 3 passing configurations; default variants among 2 tied"
    # without a default among the tied, the first by name
    others = _cells(("v3", "small", 0.5, "passed"), ("v1", "small", 0.5, "passed"))
    assert best_configuration(others, "m")[:2] == ("v1", "highest mean m (0.5) among 2 passing configurations")


def test_no_best_without_a_metric_or_a_passing_configuration():
    found = _cells(("v0", "small", 0.9, "failed"))
    assert best_configuration(found, None)[:2] == (None, "no primary metric: set promptflow_primary_metrics")
    assert best_configuration(found, "m")[:2] == (None, "no configuration passed every test and has m on every dataset")
    assert best_configuration(found, "other")[0] is None


# --- terminal.comparison_tables --------------------------------------------------------------


def _sample_document() -> dict[str, Any]:
    acc = ({"ev.score": 1}, {"ev.score": 0})
    return document(
        record("classify=v0-small", "t.py::test[v0-small]",
               {"error_rate": 0.0, "latency.p95": 0.25, "cost.total": 0.0125, "accuracy": 1.0, "ev.accuracy": 1.0},
               config="classify=v0", default=True, scores=acc),
        record("classify=v1-small", "t.py::test[v1-small]",
               {"error_rate": 0.0, "latency.p95": 0.5, "cost.total": 0.01, "accuracy": 0.5, "ev.accuracy": 0.5},
               config="classify=v1", outcome="failed", verdicts=(verdict("accuracy", ">=", 0.75, 0.5),),
               intervals={"accuracy.ci_low": 0.0946, "accuracy.ci_high": 0.9054, "error_rate.ci_low": None,
                          "error_rate.ci_high": 0.8419}),
        record("classify=v1-small", "exp.yaml::clf[v1-small]",
               {"error_rate": 0.25, "latency.p95": 0.5, "cost.total": 0.01, "acc.accuracy": 0.5},
               config="classify=v1", outcome="failed",
               verdicts=(verdict("acc.accuracy", ">=", 0.6, 0.5), verdict("error_rate", "<=", 0.0, 0.25))),
        record("small", "t.py::test_keyword[kw-small]", {"error_rate": 0.0}, flow="kw"),
    )


def test_comparison_tables_mark_the_best_cell_and_the_failing_values():
    lines = comparison_tables(_sample_document())
    pytest.LineMatcher(lines).fnmatch_lines([
        "promptflow: flow clf, 2 cells; best: classify=v0, accuracy 1",  # the score it was chosen on, then why
        "  why: highest mean accuracy (1) among 1 passing configuration",
        "     cell*accuracy*error_rate*latency.p95*cost.total*verdict",
        "  [*]  classify=v0-small  *1 *0 *0.25 *0.0125 *ok",
        "     classify=v1-small  *0.5! [[]0.095, 0.91] *0.25! [[]-, 0.84] *0.5 *0.01 *FAIL acc.accuracy >= 0.6; "
        "error_rate <= 0; accuracy >= 0.75",
        "promptflow: flow kw, 1 cell; no best cell: no primary metric: set promptflow_primary_metrics",
        "    cell   error_rate  latency.p95  cost.total  verdict",
        "    small  0           -            -           ok",
    ], consecutive=True)


def test_comparison_tables_columns_line_up_and_qq_leaves_them_out():
    lines = comparison_tables(_sample_document())
    header, *rows = lines[2:5]
    starts = [header.index(name) for name in ("cell", "accuracy", "error_rate", "latency.p95", "cost.total",
                                               "verdict")]
    for row in rows:
        assert [row[start - 2:start + 1] for start in starts] == [f"  {row[start]}" for start in starts]
        assert " " not in [row[start] for start in starts]
    assert comparison_tables(_sample_document(), verbosity=-2) == []
    assert comparison_tables({"flows": []}) == []


def test_comparison_tables_show_a_failing_metric_that_is_not_a_column():
    doc = document(record("small", "t.py::test", {"accuracy": 0.9, "latency.mean": 2.0}, outcome="failed",
                          verdicts=(verdict("latency.mean", "<=", 1.0, 2.0),)))
    pytest.LineMatcher(comparison_tables(doc)).fnmatch_lines([
        "*cell *accuracy *latency.mean *error_rate *latency.p95 *cost.total *verdict",
        "    small  0.9 *2! *- *- *- *FAIL latency.mean <= 1",
    ])


# --- pytest-html extras (the fragment, then a whole run) ----------------------------------------


def test_metrics_fragment_escapes_every_value():
    item = record("<b>v0</b>-small", "t.py::test", {"rows": 2.0, "tag<script>": 0.5, "accuracy": 0.5},
                  verdicts=(verdict("accuracy", ">=", 0.75, 0.5),), dataset="<i>small</i>", scores=({}, {}))
    fragment = metrics_fragment(item)
    assert "<script>" not in fragment and "<b>v0" not in fragment and "<i>small" not in fragment
    assert "tag&lt;script&gt;" in fragment and "&lt;b&gt;v0&lt;/b&gt;" in fragment
    cells_ = re.findall(r"<tr[^>]*>(.*?)</tr>", fragment)
    texts = [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in cells_]
    assert texts[0] == ["metric", "value", "threshold", "verdict"]
    assert texts[1] == ["accuracy", "0.5", "&gt;= 0.75", "FAIL"]  # thresholded metrics first
    assert texts[2] == ["tag&lt;script&gt;", "0.5", "", ""] and texts[-1] == ["rows", "2", "", ""]
    assert "1 metric failing" in fragment and "2 rows" in fragment


ESCAPING_SUITE = """
import pytest

def classify(text):
    return {"category": "positive" if "good" in text else "negative"}

def same(category, label):
    return {"match": float(category == label), "tag<script>alert(1)</script>": 1.0}

MAPPING = {"category": "${run.outputs.category}", "label": "${data.label}"}

@pytest.mark.promptflow(flow=classify, data=["data/small.jsonl", "data/hard.jsonl"])
def test_match(flow_run):
    result = flow_run.evaluate(same, mapping=MAPPING)
    assert result.metrics["match"] >= 0.75

def test_plain():
    pass
"""


def html_extras(path: Path) -> dict[str, list[str]]:
    """test id -> the html extras pytest-html put in its self-contained report."""
    blob = re.search(r'data-jsonblob="([^"]*)"', path.read_text(encoding="utf-8"))
    assert blob is not None
    tests = json.loads(html.unescape(blob.group(1)))["tests"]
    return {test: [extra["content"] for result in results for extra in result["extras"]
                   if extra["format_type"] == "html"]
            for test, results in tests.items()}


def test_pytest_html_extras_carry_metrics_and_verdicts(project: Project, pytester: pytest.Pytester) -> None:
    project.data("small")
    project.data("hard", HARD)
    pytester.makepyfile(test_suite=ESCAPING_SUITE)
    result = run(pytester, "--html=report.html", "--self-contained-html")
    result.assert_outcomes(passed=2, failed=1)
    extras = html_extras(pytester.path / "report.html")
    assert extras["test_suite.py::test_plain"] == []
    passed = extras["test_suite.py::test_match[classify-small]"]
    failed = extras["test_suite.py::test_match[classify-hard]"]
    assert len(passed) == len(failed) == 1
    assert "<td>match</td><td>1</td><td>&gt;= 0.75</td><td>ok</td>" in passed[0]  # a passing assert is a verdict too
    assert "<td>match</td><td>0.5</td><td>&gt;= 0.75</td><td>FAIL</td>" in failed[0]
    for fragment in passed + failed:
        assert "promptflow cell" in fragment and "<td>error_rate</td>" in fragment
        assert "tag&lt;script&gt;alert(1)&lt;/script&gt;" in fragment and "<script>" not in fragment


def test_no_extras_without_html(project: Project, pytester: pytest.Pytester) -> None:
    project.data("small")
    project.data("hard", HARD)
    pytester.makepyfile(test_suite=ESCAPING_SUITE)
    pytester.makeconftest("""
        def pytest_runtest_logreport(report):
            if report.when == "call":
                with open("extras.txt", "a") as out:
                    out.write(f"{report.nodeid} {len(getattr(report, 'extras', []))}\\n")
    """)
    run(pytester).assert_outcomes(passed=2, failed=1)
    counts = (pytester.path / "extras.txt").read_text().split()
    assert counts[1::2] == ["0", "0", "0"]


# --- JUnit properties, both front ends ---------------------------------------------------------



def test_junit_carries_each_items_metrics_from_both_front_ends(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.experiment(EXPERIMENT)
    pytester.makepyfile(test_marker="""
        import pytest

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"})
        def test_accuracy(flow_run):
            result = flow_run.evaluate("flows/ev", mapping={"groundtruth": "${data.label}",
                                                            "prediction": "${run.outputs.category}"})
            assert result.metrics["accuracy"] >= 0.75
    """)
    run(pytester, "--junitxml=junit.xml").assert_outcomes(passed=2, failed=2)
    properties = junit_properties(pytester.path / "junit.xml")
    expected = {"clf-classify=variant_0-small": "1.0", "clf-classify=variant_1-small": "0.5"}
    for cell, accuracy in expected.items():
        marker, experiment = properties[f"test_accuracy[{cell}]"], properties[f"clf[{cell}]"]
        assert marker["promptflow.ev.accuracy"] == experiment["promptflow.accuracy"] == accuracy
        for props in (marker, experiment):
            assert props["promptflow.rows"] == "4.0" and props["promptflow.error_rate"] == "0.0"
            assert "promptflow.latency.p95" in props


def test_comparison_tables_show_every_gated_metric_before_other_evaluator_metrics():
    metrics = {"primary": 0.5, "a": 0.1, "b": 0.2, "c": 0.3, "gated": 0.9, "error_rate": 0.0}
    lines = comparison_tables(document(
        record("cfg-small", "t.py::test[cfg-small]", metrics, config="cfg", default=True,
               verdicts=(verdict("gated", ">=", 0.6, 0.9),)),
        primary={"clf": "primary"}))
    header = lines[2].split()
    assert header[:4] == ["cell", "primary", "gated", "a"]  # a passing threshold's metric has its column too
    assert "c" not in header
