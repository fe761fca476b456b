"""The shipped sample on the real embedded model: the entities experiment (template format with
our keys) passes its PR overlay, and a broken prompt fails its threshold with the table."""

from __future__ import annotations

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
        "*1 of 2 thresholds failed for cell entities-NER_LLM=variant_0-entities_pr (10 rows)",
        "metric*value*threshold*verdict",
        "recall*>= 0.3*FAIL",
        "error_rate*0*<= 0.05*ok",
        "worst rows:",
        "  row *: score 0: *",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert outcomes(result) == {"failed": 1}
