"""The compatibility corpus: one small flow per pattern that real flows use (tests/corpus/<pattern>/),
each run with no credentials, on the embedded model where it calls one, through both front ends:
its experiment.yaml and its marker test (test_marker.py). Every item must pass, with no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import outcomes, run

CORPUS = Path(__file__).resolve().parent / "corpus"
PATTERNS = sorted(p.name for p in CORPUS.iterdir() if (p / "experiment.yaml").is_file())
FRONT_ENDS = ("experiment.yaml", "test_marker.py")


def test_every_pattern_has_both_front_ends() -> None:
    assert PATTERNS, f"no patterns in {CORPUS}"
    for pattern in PATTERNS:
        assert (CORPUS / pattern / "test_marker.py").is_file(), f"{pattern} has no test_marker.py"


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_pattern_runs_clean(pattern: str, front_end: str, pytester: pytest.Pytester,
                            _promptflow_loaded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AOAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)  # no credentials: the embedded model answers
    shutil.copytree(CORPUS / pattern, pytester.path, dirs_exist_ok=True)
    result = run(pytester, front_end, "-v", "--promptflow-report", "report")
    counts = outcomes(result)
    assert counts.get("passed") and set(counts) == {"passed"}, result.stdout.str()
    result.stdout.no_fnmatch_line("*Traceback*")
