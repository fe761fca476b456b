"""Dataset files: JSONL and CSV rows, their errors, the parse cache, hashes and column checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_promptflow import datasets
from pytest_promptflow.config import DatasetSpec
from pytest_promptflow.datasets import check_columns, load_rows
from pytest_promptflow.errors import SpecError, Where


def spec_for(path: Path, where: Where | None = None) -> DatasetSpec:
    return DatasetSpec(name="qa", source=path, where=where)


def load_error(path: Path, where: Where | None = None) -> str:
    with pytest.raises(SpecError) as info:
        load_rows(spec_for(path, where))
    return str(info.value)


def test_jsonl_rows_skip_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes('\ufeff{"q": "a", "n": 1}\n\n   \r\n{"q": "b\u2028c", "n": 2}\r\n'.encode())
    assert load_rows(spec_for(path)) == [{"q": "a", "n": 1}, {"q": "b\u2028c", "n": 2}]


def test_jsonl_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "a"}\n\n{"q": \n')
    text = load_error(path)
    assert text.startswith(f"{path}:3: malformed JSON: "), text
    assert text.endswith("; fix or remove line 3")


def test_jsonl_line_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "a"}\n["q", "b"]\n')
    text = load_error(path)
    assert text.startswith(f"{path}:2: line is JSON but an array, not an object; make line 2 one JSON object"), text


def test_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_bytes('\ufeffquestion,answer\r\n"a, b",1\r\n"multi\nline",2\r\n'.encode())
    assert load_rows(spec_for(path)) == [{"question": "a, b", "answer": "1"},
                                         {"question": "multi\nline", "answer": "2"}]


@pytest.mark.parametrize(
    ("text", "prefix", "fragment"),
    [
        ("q,a\n1,2,3\n", ":2: row has more fields than the header (2)", "quote values that hold commas"),
        ("q,a\n1,2\n3\n", ":3: row has fewer fields than the header (2)", "fix line 3"),
        ("q,q\n1,2\n", ":1: the header repeats column 'q'", "give every column its own name"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, prefix: str, fragment: str) -> None:
    path = tmp_path / "qa.csv"
    path.write_text(text)
    message = load_error(path)
    assert message.startswith(f"{path}{prefix}"), message
    assert fragment in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"q": "\xff"}\n')
    assert load_error(path).startswith(f"{path}: not UTF-8 text")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "qa.json"
    path.write_text("[]")
    text = load_error(path)
    assert text.startswith(f"{path}: dataset 'qa': unsupported data file qa.json; use one of: .jsonl, .csv"), text


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert load_error(path).startswith(f"{path}: dataset 'qa': file not found: {path}")
    yaml_line = Where(tmp_path / "experiment.yaml", 7)
    assert load_error(path, yaml_line).startswith(f"{tmp_path / 'experiment.yaml'}:7: dataset 'qa': file not found")


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "header_only.csv"])
def test_empty_dataset(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("q,a\n" if name == "header_only.csv" else "\n")
    assert load_error(path) == f"{path}: dataset 'qa' has no rows; add rows (one JSON object per line, " \
                               "or CSV lines under a header)"


def test_cache_shares_the_parse_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "a"}\n')
    calls: list[Path] = []
    real = datasets._read_jsonl
    monkeypatch.setattr(datasets, "_read_jsonl", lambda source: calls.append(source) or real(source))
    first = load_rows(spec_for(path))
    first[0]["q"] = "changed by a caller"
    assert load_rows(spec_for(path)) == [{"q": "a"}]  # callers get copies
    assert len(calls) == 1
    path.write_text('{"q": "a"}\n{"q": "b"}\n')
    os.utime(path, ns=(1, 1))
    assert len(load_rows(spec_for(path))) == 2
    assert len(calls) == 2


ROWS = [{"question": "a", "answer": "b"}, {"question": "c", "answer": "d", "context": "e"}]


def test_check_columns_passes() -> None:
    check_columns(spec_for(Path("qa.jsonl")), ROWS, ["question", "context", "question"], None)


def test_check_columns_names_missing_column_and_hint(tmp_path: Path) -> None:
    where = Where(tmp_path / "experiment.yaml", 12)
    with pytest.raises(SpecError) as info:
        check_columns(spec_for(tmp_path / "qa.jsonl", where), ROWS, ["questoin"], None)
    assert str(info.value) == (
        f"{tmp_path / 'experiment.yaml'}:12: dataset 'qa' (qa.jsonl) has no column 'questoin'; "
        "did you mean 'question'? available columns: question, answer, context; fix the mapping or the data"
    )


def test_check_columns_where_precedence(tmp_path: Path) -> None:
    source = tmp_path / "qa.jsonl"
    with pytest.raises(SpecError) as info:
        check_columns(spec_for(source), ROWS, ["x", "answr"], None)
    text = str(info.value)
    assert text.startswith(f"{source}: dataset 'qa' (qa.jsonl) has no columns 'x', 'answr'; "), text
    assert "did you mean 'answer' for 'answr'?" in text
    item = Where("evals/test_qa.py::test_accuracy")
    with pytest.raises(SpecError, match=r"^evals/test_qa.py::test_accuracy: dataset 'qa'"):
        check_columns(spec_for(source, Where(tmp_path / "experiment.yaml", 3)), ROWS, ["x"], item)
