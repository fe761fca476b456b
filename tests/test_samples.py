"""The shipped sample on the real embedded model: the entities experiment (template format with
our keys) passes its PR overlay, and a broken prompt fails its threshold with the table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import outcomes, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def entities_sample(pytester: pytest.Pytester, _promptflow_loaded: None) -> Path:
    """flows/entities, flows/entities_eval and evals/entities copied with the PR dataset."""
    for folder in ("flows/entities", "flows/entities_eval", "evals/entities"):
        shutil.copytree(ROOT / folder, pytester.path / folder)
    (pytester.path / "evals/data").mkdir()
    shutil.copy(ROOT / "evals/data/entities_pr.jsonl", pytester.path / "evals/data")
    return pytester.path


def test_entities_sample_passes_on_the_embedded_model(entities_sample: Path, pytester: pytest.Pytester) -> None:
    result = run(pytester, "evals/entities", "--promptflow-env", "pr", "-v", "--junitxml=report.xml")
    result.stdout.fnmatch_lines([
        "promptflow: connection aoai -> embedded model SmolLM2-135M-Instruct*",
        "*entities[[]entities-NER_LLM=variant_0-entities_pr[]] PASSED*",
    ])
    assert outcomes(result) == {"passed": 2}


def test_a_broken_prompt_fails_its_threshold_with_the_table(entities_sample: Path,
                                                             pytester: pytest.Pytester) -> None:
    prompt = entities_sample / "flows/entities/NER_LLM.jinja2"
    prompt.write_text("# system:\nReply with the word banana and nothing else.\n\n# user:\n{{text}}\n")
    result = run(pytester, "evals/entities", "--promptflow-env", "pr", "--promptflow-variants", "NER_LLM=variant_0")
    result.stdout.fnmatch_lines([
        "*1 of 4 thresholds failed for cell entities-NER_LLM=variant_0-entities_pr (10 rows)",
        "metric*value*threshold*verdict",
        "recall*>= 0.3*FAIL",
        "error_rate*0*<= 0.05*ok",
        "cost.total*0*<= 0.005*ok",
        "latency.p95*<= 30*ok",
        "worst rows:",
        "  row *: score 0: *",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert outcomes(result) == {"failed": 1}


REPLAY_TEST = '''\
import pytest


@pytest.mark.promptflow(flow="flows/sentiment", data="data/three.jsonl")
def test_answers(flow_run):
    assert len(flow_run.rows) == 3
'''


@pytest.fixture
def sentiment_sample(pytester: pytest.Pytester, _promptflow_loaded: None) -> Path:
    """flows/sentiment and a three-row dataset, with one test over the default variant."""
    shutil.copytree(ROOT / "flows/sentiment", pytester.path / "flows/sentiment")
    (pytester.path / "data").mkdir()
    rows = (ROOT / "evals/data/sentiment.jsonl").read_text().splitlines()[:3]
    (pytester.path / "data/three.jsonl").write_text("\n".join(rows) + "\n")
    pytester.makepyfile(test_replay=REPLAY_TEST)
    return pytester.path


def test_replay_misses_then_records_then_replays_without_a_model(
        sentiment_sample: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    store = sentiment_sample / ".promptflow-llm"

    missed = run(pytester, "--promptflow-llm=replay")
    missed.stdout.fnmatch_lines([
        "*replay: flow sentiment, row ? of dataset three, node classify: no recorded answer for chat/completions "
        f"of 'gpt-35-turbo' in {store} (and 2 more); rerun them with -k sentiment --promptflow-llm=cache (calls the "
        "model for the misses only), or record every answer with --promptflow-llm=record",
    ])
    missed.stdout.no_fnmatch_line("*Traceback*")
    assert outcomes(missed) == {"errors": 1}
    assert not store.exists()

    recorded = run(pytester, "--promptflow-llm=record")
    assert outcomes(recorded) == {"passed": 1}
    recorded.stdout.fnmatch_lines(["promptflow: 3 LLM calls (record mode, store *): 3 live"])
    entries = sorted(store.rglob("*.json"))
    assert len(entries) == 3

    from pytest_promptflow.llm.embedded import EmbeddedModel

    def no_model(self: EmbeddedModel) -> str:
        raise AssertionError("replay started the model server")

    monkeypatch.setattr(EmbeddedModel, "address", no_model)
    replayed = run(pytester, "--promptflow-llm=replay")
    assert outcomes(replayed) == {"passed": 1}
    replayed.stdout.fnmatch_lines(["promptflow: 3 LLM calls (replay mode, store *): 0 live, 3 from store"])
    assert sorted(store.rglob("*.json")) == entries


AGAINST_ITSELF = '''\
import pytest

EVAL_MAPPING = {"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"}


@pytest.mark.promptflow(flow="flows/sentiment", data="data/sentiment.jsonl", mappings={"text": "${data.text}"},
                        overrides={"nodes.classify.inputs.temperature": [0.7]}, baseline=BASELINE)
def test_against_itself(flow_run):
    flow_run.evaluate("flows/sentiment_eval", mapping=EVAL_MAPPING)
    if BASELINE:
        flow_run.expect("score not below baseline at 95%")
'''


def test_a_sentiment_cell_is_not_below_itself_live(pytester: pytest.Pytester, _promptflow_loaded: None) -> None:
    """A/A on the embedded model: the noisiest sample cell (temperature 0.7, 28 rows) run live twice, the second
    run compared with the first's rows.csv, passes 'not below baseline at 95%' (evals/MEASURED.md has the
    discordance such runs show)."""
    for folder in ("flows/sentiment", "flows/sentiment_eval"):
        shutil.copytree(ROOT / folder, pytester.path / folder)
    shutil.copytree(ROOT / "evals/data", pytester.path / "data")
    runs = []
    for name, baseline in (("first", None), ("second", "first/rows.csv")):
        pytester.makepyfile(test_aa=f"BASELINE = {baseline!r}\n" + AGAINST_ITSELF)
        runs.append(pytester.runpytest("-p", "no:cacheprovider", "--promptflow-llm=record",
                                       f"--promptflow-llm-store={name}-store", f"--promptflow-report={name}"))
        assert runs[-1].ret == 0, runs[-1].stdout.str()
    runs[-1].stdout.no_fnmatch_line("*Traceback*")
    verdict = json.loads((pytester.path / "second/report.json").read_text())["flows"][0]["cells"][0]["verdicts"][0]
    assert verdict["rule"] == "not-below" and verdict["passed"] and verdict["n"] == 28 and verdict["unpaired"] == 0
