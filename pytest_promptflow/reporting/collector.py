"""The session's reports: records gathered from every item's test report, and, once, on the
controller (or the only process), the merged document and the files written from it."""

from __future__ import annotations

import datetime
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any, Mapping

import pytest

from ..scrub import remember_dotenv, scrub
from .records import item_record, merge
from .tracking import log_to_tracking


class Reports:
    def __init__(self, rootdir: Path, folder: Path | None, primary_metrics: Mapping[str, str],
                 environment: Mapping[str, Any]) -> None:
        self.rootdir = rootdir
        remember_dotenv(rootdir / ".env")  # its keys are secrets to every report, also on the xdist controller
        self.folder = folder
        self.primary_metrics = primary_metrics
        self.environment = dict(environment)
        self.records: list[dict[str, Any]] = []
        self.document: dict[str, Any] | None = None

    def record(self, item: pytest.Item, report: pytest.TestReport) -> dict[str, Any] | None:
        """The record of a promptflow item, at the end of its call (or of a failed setup), scrubbed where it is
        made: it crosses to the xdist controller and into every report without a known secret or a lone surrogate."""
        planned, run, evaluations, verdicts = _results(item)
        if planned is None:
            return None
        outcome = "error" if report.when == "setup" else report.outcome
        parity = getattr(item, "parity", None) or getattr(getattr(item, "funcargs", {}).get("flow_run"), "parity", None)
        return scrub(item_record(item.nodeid, outcome, planned, run, evaluations, verdicts, parity))

    def add(self, report: pytest.TestReport) -> None:
        record = getattr(report, "promptflow", None)
        if record is not None:
            self.records.append(record)

    def finish(self) -> dict[str, Any]:
        """The merged document (made once: the reports and the release both ask for it)."""
        if self.document is None:
            self.document = merge(self.records, self.primary_metrics, {**self.environment, **_build()})
        return self.document


def _results(item: pytest.Item) -> tuple[Any, Any, list[Any], list[dict[str, Any]]]:
    """(planned cell, run, evaluations, verdicts) of a promptflow item, whichever front end made it."""
    from ..items import ExperimentItem
    from ..session import PlannedCell

    if isinstance(item, ExperimentItem):
        return item.planned, item.run, list(item.evaluations), list(item.verdicts)
    flow_run = getattr(item, "funcargs", {}).get("flow_run")
    if flow_run is not None and hasattr(flow_run, "run"):
        return flow_run.planned, flow_run.run, list(flow_run.evaluations), list(flow_run.verdicts)
    callspec = getattr(item, "callspec", None)
    planned = callspec.params.get("flow_run") if callspec is not None else None
    return (planned, None, [], []) if isinstance(planned, PlannedCell) else (None, None, [], [])


def _build() -> dict[str, str]:
    """Which build this was: the CI's run id where there is one, and the git commit."""
    build = (os.environ.get("BUILD_BUILDID") or os.environ.get("GITHUB_RUN_ID")
             or os.environ.get("CI_PIPELINE_ID") or "")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    time = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"build_id": build, "run_id": uuid.uuid4().hex[:12], "git_commit": commit, "time": time}


class ReportsPlugin:
    """Registered in every session: gathers records; on the controller it writes the reports once."""

    def __init__(self, config: pytest.Config, reports: Reports) -> None:
        self.config = config
        self.reports = reports
        self.history: list[str] = []  # what the report folder keeps from earlier runs

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.add(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or not self.reports.records:
            return  # an xdist worker: its records went to the controller on its test reports
        document = self.reports.finish()  # this session's cells only: the tables, the tracking store, a release
        if self.reports.folder is not None:
            from .history import write_history

            self.history = write_history(document, self.reports.folder, self.reports.primary_metrics)
        log_to_tracking(self.config, document, self.reports.folder)  # last: it logs the files written above

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from .terminal import comparison_tables, flaky_lines, parity_lines

        if self.reports.document is None:
            return
        verbosity = terminalreporter.config.get_verbosity()
        document = self.reports.document
        for line in [*comparison_tables(document, verbosity), *flaky_lines(document, verbosity),
                     *parity_lines(document, verbosity), *self.history]:
            terminalreporter.write_line(line)
        if self.reports.folder is not None:
            terminalreporter.write_line(f"promptflow: reports in {self.reports.folder}")
