"""Recorded human approval of a release: files, digests, and the ``pytest-promptflow`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_promptflow import approvals
from pytest_promptflow.errors import SpecError

PAYLOAD: dict[str, Any] = {
    "flow": "sentiment",
    "configuration": "sentiment-classify=variant_0-temperature=0.0",
    "variants": {"classify": "variant_0"},
    "overrides": {"nodes.classify.inputs.temperature": 0.0},
    "metrics": {"accuracy": 0.75, "latency.p95": 0.012},
    "thresholds": [{"metric": "accuracy", "op": ">=", "value": 0.6, "passed": True}],
    "datasets": [{"name": "sentiment", "content_hash": "ab12"}],
}


def pending(folder: Path, payload: dict[str, Any] = PAYLOAD) -> tuple[str, str]:
    """Writes ``payload`` as the gate would; returns its release id and digest."""
    payload_digest = approvals.digest(payload)
    release = approvals.release_id(payload["flow"], payload_digest)
    approvals.write_pending(folder, release, payload)
    return release, payload_digest


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull,
           "USER": "ci-user", "LOGNAME": "ci-user"}
    return subprocess.run([sys.executable, "-m", "pytest_promptflow.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_digest_is_of_canonical_json() -> None:
    reordered = dict(reversed(list(PAYLOAD.items())))
    assert approvals.digest(reordered) == approvals.digest(PAYLOAD)
    assert approvals.digest({**PAYLOAD, "metrics": {"accuracy": 0.76}}) != approvals.digest(PAYLOAD)
    import hashlib

    assert approvals.digest({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()


def test_pending_then_approved_counts_only_for_the_same_digest(tmp_path: Path) -> None:
    release, payload_digest = pending(tmp_path)
    assert release == f"sentiment-{payload_digest[:12]}"
    assert approvals.status(tmp_path, "sentiment", payload_digest) == "pending"

    path = approvals.approve(tmp_path, release, by="Ada", note="looks right")

    assert approvals.status(tmp_path, "sentiment", payload_digest) == "approved"
    changed = approvals.digest({**PAYLOAD, "metrics": {"accuracy": 0.74}})
    assert approvals.status(tmp_path, "sentiment", changed) is None
    assert approvals.status(tmp_path, "other-flow", payload_digest) is None
    record = json.loads(path.read_text())
    assert record["status"] == "approved" and record["payload"] == PAYLOAD
    (decision,) = record["decisions"]
    assert decision["by"] == "Ada" and decision["note"] == "looks right" and decision["digest"] == payload_digest
    assert decision["at"].endswith("+00:00")
    details = approvals.decision(tmp_path, "sentiment", payload_digest)
    assert details == {**decision, "release": release, "file": str(path)}


def test_writing_the_same_pending_release_again_keeps_its_approval(tmp_path: Path) -> None:
    release, payload_digest = pending(tmp_path)
    approvals.approve(tmp_path, release, by="Ada")
    pending(tmp_path)
    assert approvals.status(tmp_path, "sentiment", payload_digest) == "approved"


def test_rejection_is_recorded(tmp_path: Path) -> None:
    release, payload_digest = pending(tmp_path)
    path = approvals.reject(tmp_path, release, by="Grace", reason="latency too high")
    assert approvals.status(tmp_path, "sentiment", payload_digest) == "rejected"
    (decision,) = json.loads(path.read_text())["decisions"]
    assert (decision["status"], decision["by"], decision["reason"]) == ("rejected", "Grace", "latency too high")


def test_a_tampered_payload_is_refused(tmp_path: Path) -> None:
    release, payload_digest = pending(tmp_path)
    path = tmp_path / f"{release}.json"
    record = json.loads(path.read_text())
    record["payload"]["metrics"]["accuracy"] = 0.99
    path.write_text(json.dumps(record))

    with pytest.raises(SpecError, match="the payload was changed after the release was written"):
        approvals.approve(tmp_path, release, by="Mallory")
    with pytest.raises(SpecError, match="digest does not match"):
        approvals.status(tmp_path, "sentiment", payload_digest)
    assert json.loads(path.read_text())["decisions"] == []


def test_unknown_and_unsafe_release_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no release 'nope'; list the releases with: pytest-promptflow releases"):
        approvals.approve(tmp_path, "nope", by="Ada")
    with pytest.raises(SpecError, match="is not a release id"):
        approvals.approve(tmp_path, "../outside", by="Ada")


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    release, _ = pending(tmp_path)
    approvals.approve(tmp_path, release, by="Ada")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", f"{release}.json"]


def test_cli_approves_and_lists(tmp_path: Path) -> None:
    folder = tmp_path / "releases"
    release, payload_digest = pending(folder)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # the project root the CLI finds

    approved = cli("approve", release, "--note", "ok", cwd=tmp_path)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == str(folder / f"{release}.json")
    assert approvals.status(folder, "sentiment", payload_digest) == "approved"
    assert json.loads((folder / f"{release}.json").read_text())["decisions"][0]["by"] == "ci-user"

    listed = cli("releases", "--dir", str(folder), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"{release}  approved  flow=sentiment  digest={payload_digest[:12]}  ci-user at " in listed.stdout


def test_cli_rejects_with_a_reason_and_reads_the_ini_folder(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\npromptflow_release_dir = gate/pending\n")
    folder = tmp_path / "gate" / "pending"
    release, payload_digest = pending(folder)
    (tmp_path / "sub").mkdir()

    rejected = cli("reject", release, "--reason", "too slow", "--by", "Grace", cwd=tmp_path / "sub")
    assert rejected.returncode == 0, rejected.stderr
    assert approvals.status(folder, "sentiment", payload_digest) == "rejected"


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = cli("approve", "sentiment-000000000000", "--dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("pytest-promptflow: error: ")
    assert "no release 'sentiment-000000000000'" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("pytest-promptflow")
    if not script.exists():
        pytest.skip("the package is not installed with its console script here")
    result = subprocess.run([str(script), "releases", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--dir" in result.stdout


def test_the_approver_sees_a_verdicts_level_bound_and_baseline() -> None:
    """What the digest covers says how sure each gate was: ``>= 0.8 at 95%`` with its bound, and a comparison's
    baseline, difference and power, not only the point value."""
    from pytest_promptflow.release import approval_payload

    leveled = {"metric": "score", "op": ">=", "threshold": 0.8, "actual": 0.85, "passed": False, "level": 0.95,
               "bound": 0.65, "item": "t"}
    compared = {"metric": "score", "op": ">=", "threshold": -0.02, "actual": 0.85, "passed": True, "level": 0.95,
                "bound": -0.01, "baseline": "released", "rule": "non-inferior", "difference": 0.05, "n": 40,
                "discordant": 4, "mde": 0.2, "underpowered": True, "power": 0.3, "item": "t"}
    cell = {"config": "defaults", "variants": {}, "overrides": {}, "metrics": {"score": 0.85}, "dataset": "d",
            "dataset_hash": "h", "verdicts": [leveled, compared]}
    payload = approval_payload({"flow": "f", "cells": [cell]}, "defaults")
    first, second = payload["verdicts"]
    assert (first["level"], first["bound"], first["passed"]) == (0.95, 0.65, False) and "baseline" not in first
    assert (second["baseline"], second["difference"], second["n"], second["underpowered"]) == ("released", 0.05,
                                                                                              40, True)
