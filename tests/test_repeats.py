"""Repeats (``--promptflow-repeat K``, ini, marker ``repeat=``, experiment.yaml ``repeat:``): each row runs K
times; 0/1 metrics get pass@k, pass^k and a flaky rate; intervals count rows, not row x repeat; flaky rows are
reported with their outputs; the LLM store keeps repeat 0's key and gives later repeats keys of their own."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EXPERIMENT, Project, outcomes, run

from pytest_promptflow import stats
from pytest_promptflow.llm.store import FORMAT

#: a callable flow whose answer depends on how often it has seen a row: "always" is right every time, "never"
#: never, "once" only the first time, "twice" the first two times, "crash" raises the first time, then is right
COUNTING_TESTS = """
import threading

import pytest

SEEN = {}
LOCK = threading.Lock()
RIGHT_FOR = {"always": 99, "never": 0, "once": 1, "twice": 2, "crash": 99}


def counting(text):
    with LOCK:
        SEEN[text] = calls = SEEN.get(text, 0) + 1
    if text == "crash" and calls == 1:
        raise ValueError("first call crashes")
    return {"answer": "right" if calls <= RIGHT_FOR[text] else "wrong"}


def match(answer):
    return {"match": float(answer == "right")}


MARKED
def test_counting(flow_run):
    scored = flow_run.evaluate(match, mapping={"answer": "${run.outputs.answer}"})
    metrics = scored.metrics
    # c successes of 3 per row: always 3, never 0, once 1, twice 2, crash 2 (its crash scores worst)
    assert metrics["match"] == pytest.approx(8 / 15)
    assert metrics["match.pass@k"] == pytest.approx(4 / 5)  # every row but "never" passes some time
    assert metrics["match.pass^k"] == pytest.approx(1 / 5)  # only "always" passes every time
    assert metrics["match.flaky_rate"] == pytest.approx(3 / 5)
    assert metrics["error_rate"] == pytest.approx(1 / 15) and metrics["error_rate.flaky_rate"] == pytest.approx(1 / 5)
    assert "error_rate.pass@k" not in metrics
    assert metrics["rows"] == 5 and len(flow_run.rows) == 15
    assert metrics["match"].ci().n == 15
    flow_run.expect("match.pass@k >= 0.8")
"""

MARKED = '@pytest.mark.promptflow(flow=counting, data="data/rows.jsonl", REPEAT)'
ROWS = [{"id": name, "text": name} for name in ("always", "never", "once", "twice", "crash")]


def counting_project(project: Project, repeat: str = "repeat=3") -> None:
    project.data("rows", ROWS)
    project.pytester.makepyfile(test_counting=COUNTING_TESTS.replace("MARKED", MARKED.replace("REPEAT", repeat)))


def report_cell(project: Project, folder: str = "report") -> dict[str, Any]:
    document = json.loads((project.path / folder / "report.json").read_text())
    return document["flows"][0]["cells"][0]


def test_a_counting_flow_has_exact_pass_at_k_pass_hat_k_and_flaky_rows(project: Project) -> None:
    counting_project(project)
    result = run(project.pytester, "--promptflow-report", "report", "--promptflow-concurrency", "1")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["promptflow: 1 cells, 1 rows at a time per cell, repeat 3 (each row runs 3 times)",
                                 "*",
                                 "promptflow: cell counting-rows (repeat 3): flaky rows: error_rate 1 of 5 (crash); "
                                 "match.match 3 of 5 (once, twice, crash)"])
    cell = report_cell(project)
    assert cell["cell"] == "counting-rows" and cell["repeats"] == 3  # K is not part of the cell's id
    assert [(row["id"], row["repeat"]) for row in cell["rows"]] == [(r["id"], k) for r in ROWS for k in range(3)]
    assert cell["metrics"]["match.pass^k"] == pytest.approx(0.2)
    flaky = {(entry["id"], entry["metric"]): entry for entry in cell["flaky"]}
    assert sorted(flaky) == [("crash", "error_rate"), ("crash", "match.match"), ("once", "match.match"),
                             ("twice", "match.match")]
    assert flaky[("once", "match.match")]["values"] == [1.0, 0.0, 0.0]
    assert flaky[("once", "match.match")]["outputs"] == [{"answer": "right"}, {"answer": "wrong"},
                                                          {"answer": "wrong"}]
    assert flaky[("crash", "error_rate")]["outputs"] == [None, {"answer": "right"}, {"answer": "right"}]
    header = (project.path / "report" / "rows.csv").read_text().splitlines()[0].split(",")
    assert header[header.index("id") + 1] == "repeat"


def test_the_option_and_ini_set_the_repeats_and_the_marker_wins(project: Project) -> None:
    counting_project(project, repeat="name='counting'")
    assert outcomes(run(project.pytester, "--promptflow-repeat", "3")) == {"passed": 1}
    project.pytester.makeini("[pytest]\npromptflow_repeat = 3\n")
    assert outcomes(run(project.pytester)) == {"passed": 1}
    counting_project(project, repeat="repeat=3")
    assert outcomes(run(project.pytester, "--promptflow-repeat", "2")) == {"passed": 1}


def test_intervals_are_over_rows_so_repeating_a_deterministic_flow_leaves_them_unchanged(project: Project) -> None:
    """A flow that answers every repeat alike says nothing more with K=3 than with K=1: same mean, same bounds."""
    project.dag_flow()
    project.eval_flow()
    project.data()
    project.experiment(EXPERIMENT)
    once = run(project.pytester, "exp", "--promptflow-report", "once")
    thrice = run(project.pytester, "exp", "--promptflow-report", "thrice", "--promptflow-repeat", "3")
    assert outcomes(once) == outcomes(thrice) == {"passed": 1, "failed": 1}, thrice.stdout.str()
    for k in (0, 1):
        one = json.loads((project.path / "once" / "report.json").read_text())["flows"][0]["cells"][k]
        three = json.loads((project.path / "thrice" / "report.json").read_text())["flows"][0]["cells"][k]
        assert three["repeats"] == 3 and len(three["rows"]) == 3 * len(one["rows"]) and three["flaky"] == []
        assert three["metrics"]["acc.score"] == one["metrics"]["acc.score"]
        for field in ("ci_low", "ci_high"):
            assert three["intervals"][f"acc.score.{field}"] == pytest.approx(one["intervals"][f"acc.score.{field}"])
        assert three["intervals"]["acc.score.n"] == 3 * one["intervals"]["acc.score.n"]
        assert three["metrics"]["acc.score.pass^k"] == one["metrics"]["acc.score"]  # each row all or nothing


# --- bad input: one line each ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "x"])
def test_a_bad_repeat_option_is_one_usage_line(project: Project, value: str) -> None:
    counting_project(project, repeat="name='counting'")
    result = run(project.pytester, f"--promptflow-repeat={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*argument --promptflow-repeat: repeat {value!r} is not a whole number of 1 or "
                                 "more; give a whole number of runs per row, 1 or more*"])


def test_a_bad_repeat_in_ini_marker_or_experiment_is_one_line_naming_where(project: Project) -> None:
    counting_project(project, repeat="name='counting'")
    ini_file = project.pytester.makeini("[pytest]\npromptflow_repeat = 0\n")
    ini = run(project.pytester)
    assert ini.ret == pytest.ExitCode.USAGE_ERROR
    ini.stderr.fnmatch_lines(["ERROR: pytest-promptflow: ini promptflow_repeat: repeat '0' is not a whole number "
                              "of 1 or more; give a whole number of runs per row, 1 or more"])
    ini_file.unlink()

    counting_project(project, repeat="repeat=0")
    marker = run(project.pytester)
    assert outcomes(marker) == {"errors": 1}
    line = (project.path / "test_counting.py").read_text().splitlines().index(MARKED.replace("REPEAT", "repeat=0")) + 1
    marker.stdout.fnmatch_lines([f"*/test_counting.py:{line}: promptflow marker: repeat 0 is not a whole number of 1 "
                                 "or more; give a whole number of runs per row, 1 or more"])
    marker.stdout.no_fnmatch_line("*Traceback*")

    project.dag_flow()
    project.eval_flow()
    project.data()
    path = project.experiment(EXPERIMENT + "repeat: -1\n")
    line = EXPERIMENT.count("\n") + 1
    experiment = run(project.pytester, "exp")
    assert outcomes(experiment) == {"failed": 1}
    experiment.stdout.fnmatch_lines([f"{path}:{line}: experiment: repeat -1 is not a whole number of 1 or more; "
                                     "give a whole number of runs per row, 1 or more"])
    experiment.stdout.no_fnmatch_line("*Traceback*")


# --- the LLM store: repeat 0 keeps today's key, later repeats have their own ------------------------------

CORPUS = Path(__file__).resolve().parent / "corpus"


ANSWERS_TEST = """
import pytest


@pytest.mark.promptflow(flow="flow", data="data.jsonl")
def test_answers(flow_run):
    judged = flow_run.evaluate("judges/relevance.prompty",
                               mapping={"question": "${data.question}", "answer": "${run.outputs.answer}"})
    assert judged.metrics["error_rate"] == 0
"""


def key_before_repeats(entry: dict[str, Any]) -> str:
    """The key the store gave a request before repeats existed: the same canonical JSON, with no repeat field."""
    request = {name: entry["request"][name] for name in ("provider", "kind", "model", "api_version", "body")}
    canonical = json.dumps({"format": FORMAT, **request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored(store: Path) -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in store.rglob("*.json")}


def test_repeats_store_their_own_answers_and_replay_them_while_repeat_0_keeps_its_key(
        pytester: pytest.Pytester, _promptflow_loaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AOAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)  # no credentials: the embedded model answers
    shutil.copytree(CORPUS / "dag_python_and_llm" / "flow", pytester.path / "flow")
    shutil.copytree(CORPUS / "prompty_judge_evaluator" / "judges", pytester.path / "judges")
    questions = (CORPUS / "dag_python_and_llm" / "data.jsonl").read_text().splitlines(True)[:2]
    (pytester.path / "data.jsonl").write_text("".join(questions))
    pytester.makepyfile(test_marker=ANSWERS_TEST)

    once = run(pytester, "test_marker.py", "--promptflow-llm=record", "--promptflow-llm-store", "once")
    assert outcomes(once) == {"passed": 1}, once.stdout.str()
    single = stored(pytester.path / "once")
    assert len(single) == 4 and all(key == key_before_repeats(entry) for key, entry in single.items())

    recorded = run(pytester, "test_marker.py", "--promptflow-llm=record", "--promptflow-llm-store", "three",
                   "--promptflow-repeat", "3", "--promptflow-report", "recorded")
    assert outcomes(recorded) == {"passed": 1}, recorded.stdout.str()
    triple = stored(pytester.path / "three")
    assert len(triple) == 12  # 2 rows x 3 repeats, a flow call and a judge call each
    assert sorted(entry["request"].get("repeat", 0) for entry in triple.values()) == [0] * 4 + [1] * 4 + [2] * 4
    assert set(single) < set(triple)  # repeat 0 is stored under the key it always had

    from pytest_promptflow.llm.embedded import EmbeddedModel

    def no_model(self: EmbeddedModel) -> str:
        raise AssertionError("replay started the model server")

    monkeypatch.setattr(EmbeddedModel, "address", no_model)
    replayed = run(pytester, "test_marker.py", "--promptflow-llm=replay", "--promptflow-llm-store", "three",
                   "--promptflow-repeat", "3", "--promptflow-report", "replayed")
    assert outcomes(replayed) == {"passed": 1}, replayed.stdout.str()
    replayed.stdout.fnmatch_lines(["promptflow: 12 LLM calls (replay mode, store *): 0 live, 12 from store"])
    outputs = [[(row["id"], row["repeat"], row["outputs"], row["scores"])
                for row in report_cell_at(pytester.path / folder)["rows"]] for folder in ("recorded", "replayed")]
    assert outputs[0] == outputs[1]


def report_cell_at(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())["flows"][0]["cells"][0]


# --- simulations: repeats lift power on noisy rows without more false alarms --------------------------------


def _allowed(rate: float, suites: int) -> float:
    """A simulated rate whose truth is at most ``rate`` stays under this (three binomial standard errors)."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / suites)


def _at_least(rate: float, suites: int) -> float:
    """A simulated rate whose truth is at least ``rate`` stays above this (three binomial standard errors)."""
    return rate - 3 * math.sqrt(rate * (1 - rate) / suites)


def _superior_share(candidate_rates: np.ndarray, baseline_rates: np.ndarray, repeats: int, suites: int,
                    seed: int) -> float:
    """Share of suites where the candidate's per-row means over ``repeats`` beat the baseline's at 95%: the paired
    t bound of ``stats.paired_mean_difference``, vectorised over suites (and checked against it on some)."""
    rng = np.random.default_rng(seed)
    rows = len(candidate_rates)
    candidate = rng.binomial(repeats, candidate_rates, (suites, rows)) / repeats
    baseline = rng.binomial(repeats, baseline_rates, (suites, rows)) / repeats
    differences = candidate - baseline
    low = differences.mean(axis=1) - stats.t_quantile(0.95, rows - 1) * differences.std(axis=1, ddof=1) / rows**0.5
    passed = low > 0
    for c, b, vectorised in zip(candidate[:50], baseline[:50], passed[:50], strict=True):
        assert stats.superior(stats.paired_mean_difference(c, b)).passed == vectorised
    return float(passed.mean())


def test_three_repeats_lift_power_on_noisy_rows_to_80_percent_and_identical_variants_alarm_at_most_5():
    """Noisy rows (each passes 30-70% of the time) and a candidate 10 points better on every row: at 120 rows one
    run per row catches it about half the time, three runs per row nearly nine times in ten. Identical variants, with
    or without repeats, still alarm at most 5% of the time."""
    suites, rows = 20_000, 120
    rates = np.random.default_rng(3).uniform(0.3, 0.7, rows)
    once = _superior_share(rates + 0.1, rates, 1, suites, seed=1)
    thrice = _superior_share(rates + 0.1, rates, 3, suites, seed=2)
    assert thrice >= _at_least(0.8, suites)
    assert once <= _allowed(0.6, suites)  # the lift is the repeats' doing
    for repeats in (1, 3):
        assert _superior_share(rates, rates, repeats, suites, seed=4 + repeats) <= _allowed(0.05, suites)


def test_clustered_wilson_counts_rows_whose_repeats_agree_once_and_independent_repeats_as_values():
    def bounds(interval: stats.Interval) -> tuple[float, float]:
        return interval.low, interval.high

    clusters = np.repeat(np.arange(20), 3)
    agreeing = np.repeat([1.0] * 17 + [0.0] * 3, 3)
    assert bounds(stats.clustered_wilson(agreeing, clusters)) == pytest.approx(bounds(stats.wilson(17, 20)))
    assert bounds(stats.clustered_wilson(np.ones(60), clusters)) == bounds(stats.wilson(20, 20))  # no variance
    mixed = np.tile([1.0, 1.0, 0.0], 20)  # every row passes 2 of 3: rows do not differ, the 60 values count
    assert bounds(stats.clustered_wilson(mixed, clusters)) == pytest.approx(bounds(stats.wilson(40, 60)))
    with pytest.raises(ValueError, match="0/1"):
        stats.clustered_wilson([0.5, 1.0], [0, 0])


def test_a_clustered_wilson_gate_at_the_threshold_passes_at_most_5_percent_with_repeats():
    """Rows whose repeats agree (the worst case for counting repeats as rows) with the truth at the threshold:
    ``>= 0.8 at 95%`` on 40 rows x 3 repeats passes at most 5%, as Wilson on 40 rows does; counting the 120
    values as independent would pass far more often."""
    suites, rows, repeats, threshold = 4_000, 40, 3, 0.8
    rng = np.random.default_rng(9)
    passes = rng.random((suites, rows)) < threshold
    values = np.repeat(passes, repeats, axis=1).astype(float)
    clusters = np.repeat(np.arange(rows), repeats)
    clustered = np.mean([stats.clustered_wilson(v, clusters, 0.95, 1).low >= threshold for v in values])
    naive = np.mean([stats.wilson(int(v.sum()), len(v), 0.95, 1).low >= threshold for v in values])
    assert clustered <= _allowed(0.05, suites)
    assert naive > 0.1


def test_a_failure_table_names_the_row_and_the_repeat_of_a_worst_run() -> None:
    from pytest_promptflow.config import DatasetSpec
    from pytest_promptflow.engine import Row, Run
    from pytest_promptflow.evaluation import worst_rows
    from pytest_promptflow.matrix import Cell
    from pytest_promptflow.reporting.failure import worst_rows_lines

    def ran(index: int, repeat: int, error: str | None) -> Row:
        return Row(index, {"text": "t"}, {"text": "t"}, None if error else {"answer": "a"}, error and "ValueError",
                   error, 0.1, identity=f"r{index}", repeat=repeat)

    cell = Cell("flow", (), (), DatasetSpec("rows", Path("rows.jsonl")))
    run = Run(cell, (ran(0, 0, None), ran(0, 1, None), ran(1, 0, None), ran(1, 1, "boom")), 1.0, repeats=2)
    assert run.dataset_rows == 2 and run.duplicate_identities == 0
    lines = worst_rows_lines(worst_rows(run, [], "match"))
    assert lines[1] == "  row 1, repeat 1: error ValueError: boom: {\"text\": \"t\"}"


REFERENCED = """\
name: clf
flow: ../flows/clf
repeat: 2
datasets:
- name: small
  source: ../data/small.jsonl
  mappings:
    text: "${data.text}"
evaluators:
- name: acc
  flow: ../flows/ev
  datasets:
  - name: truth
    reference: small
    source: ../data/truth.jsonl
    mappings:
      groundtruth: "${data.truth}"
      prediction: "${run.outputs.category}"
variants:
  strategy: defaults
thresholds:
  acc.score: ">= 1"
  acc.score.pass^k: ">= 1"
"""


def test_experiment_repeat_scores_each_repeat_against_its_rows_line_in_a_referenced_dataset(project: Project) -> None:
    """``repeat: 2`` in experiment.yaml; an evaluator dataset of its own (``reference: small``) gives each repeat of
    row i its line i."""
    from conftest import SMALL

    project.dag_flow()
    project.eval_flow()
    project.data()
    project.data("truth", [{"truth": row["label"]} for row in SMALL])
    project.experiment(REFERENCED)
    result = run(project.pytester, "exp", "--promptflow-report", "report")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    cell = report_cell(project)
    assert cell["repeats"] == 2 and [row["repeat"] for row in cell["rows"]] == [0, 1] * 4
    assert [row["scores"]["acc.score"] for row in cell["rows"]] == [1] * 8
