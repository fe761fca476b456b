"""A flow's requirements.txt, read when the flow does not load: the package it names that is missing, or in
a version it does not ask for, is the one line."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from pytest_promptflow.flow_errors import missing_package


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
