"""The working directory lease: rows of flows in one folder share it, a flow of another folder waits for
them, and pytest's own working directory comes back, also after a row raised."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_promptflow.workdir import working_directory


def test_each_row_sees_its_flows_folder_while_rows_of_two_folders_run_at_once(tmp_path: Path):
    folders = [tmp_path / "flow_a", tmp_path / "eval_b"]
    for folder in folders:
        folder.mkdir()
    home = os.getcwd()

    def row(i: int) -> list[str]:
        folder = folders[i % 2]
        seen = []
        with working_directory(folder):
            for _ in range(5):
                seen.append(os.getcwd())
                time.sleep(0.002)
        return seen

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(row, range(16)))

    for i, seen in enumerate(results):
        assert set(seen) == {str(folders[i % 2].resolve())}
    assert os.getcwd() == home


def test_the_working_directory_comes_back_after_a_row_raised(tmp_path: Path):
    home = os.getcwd()
    with pytest.raises(ValueError), working_directory(tmp_path):
        assert os.getcwd() == str(tmp_path.resolve())
        raise ValueError("row failed")
    assert os.getcwd() == home


def test_a_flow_that_runs_another_flow_keeps_its_folder_instead_of_waiting_on_itself(tmp_path: Path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    with working_directory(outer), working_directory(inner):
        assert os.getcwd() == str(outer.resolve())
