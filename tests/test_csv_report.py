"""The CSV reports: rows.csv, metrics.csv and experiments.csv, from a hand-built document and from a
user's run. Read back with pandas, as a user would."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import Project, jsonl, run

from pytest_promptflow.reporting.csv_files import evaluator_metrics, metric_order, safe, write_csv
from pytest_promptflow.stats import wilson

CELL_COLUMNS = ["flow", "cell", "config", "variants", "overrides", "dataset", "dataset_hash"]
ENVIRONMENT = {"build_id": "4711", "run_id": "abc123", "git_commit": "f00d", "promptflow_env": "dev",
               "llm_mode": "cache"}


def _cell(flow: str, config: str, variants: dict[str, str], overrides: dict[str, Any], metrics: dict[str, float],
          rows: list[dict[str, Any]], outcome: str = "passed", verdicts: list[dict[str, Any]] | None = None
          ) -> dict[str, Any]:
    return {"flow": flow, "cell": f"{flow}-{config}-small", "config": config, "variants": variants,
            "default": config == "classify=variant_0", "overrides": overrides, "dataset": "small",
            "dataset_path": "/p/data/small.jsonl", "dataset_hash": "beef", "items": [], "outcome": outcome,
            "verdicts": verdicts or [], "metrics": metrics, "rows": rows}


def _row(index: int, text: str, label: str, category: str | None, scores: dict[str, Any],
         error: str | None = None) -> dict[str, Any]:
    return {"index": index, "id": f"row-{index}", "data": {"text": text, "label": label}, "inputs": {"text": text},
            "outputs": None if category is None else {"category": category}, "error": error,
            "latency": 0.25, "cached": False, "llm_calls": 1, "tokens": 12, "cost": 0.001, "scores": scores}


def document() -> dict[str, Any]:
    """Two cells of flow clf (evaluators ev and judge, whose own spend is ``judge.cost.total``) and one
    cell of flow other without evaluators; rows carry text a spreadsheet would run as a formula."""
    built_in = {"rows": 2.0, "error_rate": 0.5, "latency.rows": 2.0, "latency.mean": 0.25, "latency.p95": 0.25,
                "llm.calls": 2.0, "llm.cache_hits": 0.0, "tokens.prompt": 20.0, "tokens.completion": 4.0,
                "tokens.total": 24.0, "cost.total": 0.002}
    first = _cell("clf", "classify=variant_0", {"classify": "variant_0", "decorate": "plain"},
                  {"nodes.classify.inputs.temperature": 0.7}, {
                      **built_in, "accuracy": 1.0, "ev.accuracy": 1.0, "fluency": 4.0, "judge.fluency": 4.0,
                      "judge.cost.total": 0.5},
                  [_row(0, "=HYPERLINK(\"http://x\")", "positive", "positive", {"ev.score": 1, "judge.fluency": 4}),
                   _row(1, 'a, "quoted"\nsecond line', "-negative", None, {"ev.score": None}, "ValueError: boom")])
    second = _cell("clf", "classify=variant_1", {"decorate": "plain", "classify": "variant_1"}, {}, {
        **built_in, "accuracy": 0.5, "ev.accuracy": 0.5}, [_row(0, "@SUM(A1)", "+positive", "positive",
                                                               {"ev.score": 0})],
        outcome="failed", verdicts=[{"metric": "accuracy", "op": ">=", "threshold": 0.75, "actual": 0.5,
                                     "passed": False, "item": "t.py::x"}])
    other = _cell("other", "defaults", {}, {}, {"rows": 1.0, "error_rate": 0.0, "zeta": 2.0},
                  [{**_row(0, "plain", "positive", "positive", {}), "data": {"text": "plain", "extra": [1, "a"]}}])
    return {"version": 1, "environment": ENVIRONMENT, "flows": [
        {"flow": "clf", "primary_metric": "accuracy", "best": "classify=variant_0", "best_reason": "",
         "cells": [first, second]},
        {"flow": "other", "primary_metric": None, "best": None, "best_reason": "", "cells": [other]},
    ]}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_rows_csv_columns_values_and_formula_guard(tmp_path: Path) -> None:
    write_csv(document(), tmp_path)
    rows = _read(tmp_path / "rows.csv")
    assert list(rows.columns) == [
        *CELL_COLUMNS, "index", "id", "data.extra", "data.label", "data.text", "inputs.text", "outputs.category",
        "error", "latency", "cached", "llm_calls", "tokens", "cost", "ev.score", "judge.fluency"]
    assert len(rows) == 4
    first = rows.iloc[0]
    assert first["variants"] == "classify=variant_0;decorate=plain"
    assert first["overrides"] == "nodes.classify.inputs.temperature=0.7"
    assert first["data.text"] == "'=HYPERLINK(\"http://x\")"  # a formula shows as text
    assert first["id"] == "row-0"  # what pairs the row with the same row of another run
    assert (first["ev.score"], first["judge.fluency"], first["latency"]) == (1, 4, 0.25)
    failed = rows.iloc[1]
    assert failed["data.text"] == 'a, "quoted"\nsecond line'  # commas, quotes, newlines survive
    assert failed["data.label"] == "'-negative"
    assert failed["error"] == "ValueError: boom"
    assert pd.isna(failed["outputs.category"]) and pd.isna(failed["ev.score"])
    assert rows.iloc[2]["data.text"] == "'@SUM(A1)"
    assert rows.iloc[2]["data.label"] == "'+positive"
    assert rows.iloc[2]["variants"] == "classify=variant_1;decorate=plain"  # sorted by node
    assert rows.iloc[3]["data.extra"] == '[1, "a"]'  # containers as JSON
    assert rows["cached"].tolist() == [False] * 4


def test_metrics_csv_has_every_metric_built_ins_in_a_fixed_order(tmp_path: Path) -> None:
    write_csv(document(), tmp_path)
    metrics = _read(tmp_path / "metrics.csv")
    assert list(metrics.columns) == [
        *CELL_COLUMNS, "outcome", "best", "failed_thresholds",
        "accuracy", "fluency", "zeta",
        "rows", "error_rate", "latency.rows", "latency.mean", "latency.p95", "llm.calls", "llm.cache_hits",
        "tokens.prompt", "tokens.completion", "tokens.total", "cost.total",
        "ev.accuracy", "judge.cost.total", "judge.fluency"]
    assert metrics["cell"].tolist() == ["clf-classify=variant_0-small", "clf-classify=variant_1-small",
                                        "other-defaults-small"]
    assert metrics["outcome"].tolist() == ["passed", "failed", "passed"]
    assert metrics["best"].tolist() == [True, False, False]
    assert metrics["failed_thresholds"].fillna("").tolist() == ["", "accuracy >= 0.75", ""]
    assert metrics["accuracy"].tolist()[:2] == [1.0, 0.5]
    assert metrics["judge.cost.total"].tolist()[0] == 0.5
    assert pd.isna(metrics["accuracy"].tolist()[2]) and metrics["zeta"].tolist()[2] == 2.0


def test_experiments_csv_one_line_per_cell_and_evaluator(tmp_path: Path) -> None:
    write_csv(document(), tmp_path)
    experiments = _read(tmp_path / "experiments.csv")
    assert list(experiments.columns) == ["build_id", "run_id", "git_commit", "promptflow_env", "llm_mode",
                                         *CELL_COLUMNS, "outcome", "evaluator", "accuracy", "cost.total", "fluency"]
    assert [(row.cell, row.evaluator) for row in experiments.itertuples()] == [
        ("clf-classify=variant_0-small", "ev"), ("clf-classify=variant_0-small", "judge"),
        ("clf-classify=variant_1-small", "ev")]  # a cell without evaluators has no line here
    assert experiments["build_id"].tolist() == [4711] * 3
    assert experiments["git_commit"].tolist() == ["f00d"] * 3
    judge = experiments.iloc[1]
    assert (judge["fluency"], judge["cost.total"]) == (4.0, 0.5) and pd.isna(judge["accuracy"])
    assert experiments.iloc[2]["accuracy"] == 0.5


def test_same_document_same_files_whatever_its_key_order(tmp_path: Path) -> None:
    """The document read back from report.json (keys sorted) gives byte-identical CSV files."""
    original = document()
    reread = json.loads(json.dumps(copy.deepcopy(original), sort_keys=True))
    write_csv(original, tmp_path / "a")
    write_csv(reread, tmp_path / "b")
    for name in ("rows.csv", "metrics.csv", "experiments.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_evaluator_metrics_and_metric_order() -> None:
    metrics = {"accuracy": 1.0, "ev.accuracy": 1.0, "cost.total": 0.1, "judge.cost.total": 0.2, "latency.p95": 1.0,
               "my.eval.score": 3.0, "score": 3.0, "rows_matched": 2.0, "ev.rows_matched": 2.0}
    assert evaluator_metrics(metrics) == {"ev": {"accuracy": 1.0, "rows_matched": 2.0},
                                          "judge": {"cost.total": 0.2}, "my.eval": {"score": 3.0}}
    assert metric_order(metrics) == ["accuracy", "rows_matched", "score", "latency.p95", "cost.total",
                                     "ev.accuracy", "ev.rows_matched", "judge.cost.total", "my.eval.score"]


@pytest.mark.parametrize(("value", "written"), [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("a=1", "a=1"),
    (-1, -1), (0.5, 0.5), (None, ""), (True, True), ({"b": 1, "a": "=x"}, '{"a": "=x", "b": 1}'),
])
def test_safe_guards_formulas_only_in_text(value: Any, written: Any) -> None:
    assert safe(value) == written


def test_a_users_run_writes_the_three_tables(project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.write("data/small.jsonl", jsonl([
        {"text": "a good day", "label": "positive"},
        {"text": "=cmd|' /C calc'!A0, \"bad\"", "label": "negative"},
    ]))
    pytester.makepyfile(test_suite="""
        import pytest

        def exact(prediction, groundtruth):
            return {"exact": float(prediction == groundtruth)}

        @pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl", variants={"classify": "*"})
        def test_accuracy(flow_run):
            mapping = {"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"}
            flow_run.evaluate(exact, mapping=mapping)
            assert flow_run.evaluate("flows/ev", mapping=mapping).metrics["accuracy"] >= 0.75
    """)
    result = run(pytester, "--promptflow-report", "out")
    result.assert_outcomes(passed=1, failed=1)
    folder = pytester.path / "out"
    rows = _read(folder / "rows.csv")
    assert list(rows.columns) == [*CELL_COLUMNS, "index", "id", "data.label", "data.text", "inputs.text",
                                  "outputs.category", "error", "latency", "cached", "llm_calls", "tokens", "cost",
                                  "ev.score", "exact.exact"]
    assert rows["cell"].tolist() == ["clf-classify=variant_0-small"] * 2 + ["clf-classify=variant_1-small"] * 2
    assert rows["variants"].tolist()[::2] == ["classify=variant_0", "classify=variant_1"]
    assert rows["data.text"].tolist()[:2] == ["a good day", "'=cmd|' /C calc'!A0, \"bad\""]
    assert rows["outputs.category"].tolist() == ["positive", "negative", "positive", "positive"]
    assert rows["ev.score"].tolist() == [1, 1, 1, 0]
    metrics = _read(folder / "metrics.csv")
    assert metrics[["outcome", "best", "accuracy", "exact", "error_rate"]].values.tolist() == [
        ["passed", True, 1.0, 1.0, 0.0], ["failed", False, 0.5, 0.5, 0.0]]
    assert metrics["failed_thresholds"].fillna("").tolist() == ["", "accuracy >= 0.75"]
    interval_columns = [c for c in metrics.columns if c.endswith((".ci_low", ".ci_high", ".se", ".n"))]
    metric_columns = [c for c in metrics.columns if c not in interval_columns]
    assert list(metric_columns[-3:]) == ["ev.accuracy", "ev.score", "exact.exact"]
    assert list(metrics.columns[-len(interval_columns):]) == interval_columns  # after every metric
    # means of per-row scores have a 95% interval (Wilson for 0/1); so has the aggregation's log_metric accuracy,
    # the mean of its per-row score: that column's
    assert {"exact.ci_low", "exact.ci_high", "exact.se", "exact.n", "ev.score.ci_low", "error_rate.n",
            "accuracy.ci_low", "ev.accuracy.ci_high"} <= set(interval_columns)
    # 2 of 2 right: Wilson's lower bound, not the [1, 1] every bootstrap resample of two right rows gives
    assert metrics["accuracy.ci_low"].tolist()[0] == pytest.approx(wilson(2, 2).low)
    expected = wilson(1, 2)
    assert metrics[["exact.ci_low", "exact.ci_high", "exact.n"]].values.tolist()[1] == pytest.approx(
        [expected.low, expected.high, 2])
    experiments = _read(folder / "experiments.csv")
    assert experiments[["config", "evaluator", "accuracy", "exact"]].fillna("-").values.tolist() == [
        ["classify=variant_0", "ev", 1.0, "-"], ["classify=variant_0", "exact", "-", 1.0],
        ["classify=variant_1", "ev", 0.5, "-"], ["classify=variant_1", "exact", "-", 0.5]]
    assert experiments["llm_mode"].tolist() == ["cache"] * 4
