"""A flow's requirements.txt, read when the flow does not load: the package it names that is missing, or in
a version it does not ask for, is the one line."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from pytest_promptflow.errors import SpecError, Where, unforeseen
from pytest_promptflow.flow_errors import missing_package, with_traceback
from pytest_promptflow.flows import load_target


def test_a_package_in_another_version_than_asked_is_named_with_both(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text("--index-url https://example.invalid/simple\n"
                                               "promptflow  # the runtime\npytest<1\n", encoding="utf-8")
    error = missing_package(tmp_path, "clf")
    assert error is not None
    file = tmp_path / "requirements.txt"
    assert str(error) == (f"{file}:3: flow clf: package pytest {metadata.version('pytest')} is installed but "
                          f"requirements.txt asks for <1; pip install -r {file}")


def test_requirements_that_are_met_or_not_for_this_platform_are_no_error(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text('pytest>=7\nnot-installed-pkg-xyz; sys_platform == "nope"\n',
                                               encoding="utf-8")
    assert missing_package(tmp_path, "clf") is None
    assert missing_package(tmp_path / "no-such-folder", "clf") is None


def test_a_flow_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path):
    (tmp_path / "flow.dag.yaml").write_bytes(b"inputs: {}\n# caf\xe9\n")
    with pytest.raises(SpecError) as raised:
        load_target(tmp_path, tmp_path)
    assert str(raised.value) == (f"{tmp_path / 'flow.dag.yaml'}: not UTF-8 text (invalid continuation byte at byte "
                                 "16); save the file as UTF-8")


def test_an_unforeseen_error_is_one_line_with_its_traceback_when_asked(tmp_path: Path):
    try:
        {}["nope"]
    except KeyError as exc:
        error = unforeseen(exc, Where(tmp_path / "test_x.py", 3), "promptflow marker")
    assert with_traceback(error, show=False) == (
        f"{tmp_path / 'test_x.py'}:3: promptflow marker: KeyError: 'nope'; fix what it names (-vv shows the "
        "traceback; if the input looks right, report it)")
    assert '{}["nope"]' in with_traceback(error, show=True)
