"""With ``-n 2`` the reports hold the same cells and figures as a serial run, and only the
controller writes them (issue 4, item 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import EXPERIMENT, HARD, Project, outcomes, run
from test_reports import html_extras

SUITE = """
import pytest

ARGS = dict(flow="flows/clf", data=["data/small.jsonl", "data/hard.jsonl"], variants={"classify": "*"})
MAPPING = {"groundtruth": "${data.label}", "prediction": "${run.outputs.category}"}

@pytest.mark.promptflow(**ARGS)
def test_accuracy(flow_run):
    result = flow_run.evaluate("flows/ev", mapping=MAPPING)
    assert result.metrics["accuracy"] >= 0.99

@pytest.mark.promptflow(**ARGS)
def test_no_errors(flow_run):
    assert flow_run.metrics["error_rate"] == 0.0
"""

#: Logs which process writes the report folder (an xdist worker's config has ``workerinput``;
#: PYTEST_XDIST_WORKER would be inherited when this suite itself runs under xdist).
WRITERS = """
from pathlib import Path

import pytest_promptflow.reporting.files as files

ORIGINAL = files.write_reports
LOG = Path(__file__).parent / "writers.txt"


def pytest_configure(config):
    role = config.workerinput["workerid"] if hasattr(config, "workerinput") else "controller"

    def write_reports(document, folder):
        with LOG.open("a") as log:
            log.write(f"{role} {folder.name}\\n")
        return ORIGINAL(document, folder)

    files.write_reports = write_reports


def pytest_unconfigure(config):
    files.write_reports = ORIGINAL
"""


def without_timings(document: dict[str, Any]) -> dict[str, Any]:
    """The document less what differs from run to run: row latencies, ``latency.*`` metrics, the run's id and
    time (also in each cell's origin)."""
    document = json.loads(json.dumps(document))
    document["environment"].pop("run_id")
    document["environment"].pop("time")
    for flow in document["flows"]:
        for cell in flow["cells"]:
            cell.pop("origin")
            cell["metrics"] = {k: v for k, v in cell["metrics"].items() if not k.startswith("latency.")}
            for row in cell["rows"]:
                row.pop("latency")
    return document


def test_xdist_reports_equal_serial_ones_and_the_controller_writes_them(
        project: Project, pytester: pytest.Pytester) -> None:
    project.dag_flow()
    project.eval_flow()
    project.data("small")
    project.data("hard", HARD)
    project.experiment(EXPERIMENT)  # variant_1 misses accuracy >= 0.75 on small
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(WRITERS)
    expected = {"passed": 6, "failed": 4}  # test_accuracy fails on 3 of 4 cells, the experiment on 1 of 2

    serial = run(pytester, "--promptflow-report", "serial")
    assert outcomes(serial) == expected
    parallel = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--promptflow-report", "parallel",
                                             "--html=parallel.html", "--self-contained-html")
    assert outcomes(parallel) == expected

    writers = (pytester.path / "writers.txt").read_text().splitlines()
    assert writers == ["controller serial", "controller parallel"]
    folders = {name: pytester.path / name for name in ("serial", "parallel")}
    assert sorted(p.name for p in folders["serial"].iterdir()) == sorted(p.name for p in folders["parallel"].iterdir())
    documents = {name: json.loads((folder / "report.json").read_text()) for name, folder in folders.items()}
    assert without_timings(documents["serial"]) == without_timings(documents["parallel"])
    assert documents["serial"]["environment"]["run_id"] != documents["parallel"]["environment"]["run_id"]

    for document in documents.values():
        (flow,) = document["flows"]
        cells = {cell["cell"]: cell for cell in flow["cells"]}
        assert list(cells) == [f"clf-classify=variant_{v}-{d}" for v in (0, 1) for d in ("hard", "small")]
        assert [len(cell["items"]) for cell in cells.values()] == [2, 3, 2, 3]  # two tests (+ the experiment)
        failing = {(v["item"].rpartition("::")[2], v["metric"], v["op"], v["threshold"], v["actual"])
                   for cell in cells.values() for v in cell["verdicts"] if not v["passed"]}
        assert failing == {
            ("clf[clf-classify=variant_1-small]", "accuracy", ">=", 0.75, 0.5),  # experiment.yaml threshold
            ("test_accuracy[clf-classify=variant_0-hard]", "accuracy", ">=", 0.99, 0.5),  # marker assertions
            ("test_accuracy[clf-classify=variant_1-small]", "accuracy", ">=", 0.99, 0.5),
            ("test_accuracy[clf-classify=variant_1-hard]", "accuracy", ">=", 0.99, 0.5),
        }
        assert [cell["outcome"] for cell in cells.values()] == ["failed", "passed", "failed", "failed"]
        assert flow["best"] is None

    table = [line for line in serial.outlines if line.startswith("promptflow: flow clf")]
    assert len(table) == 1
    parallel.stdout.fnmatch_lines([table[0]])  # the controller prints the same comparison
    extras = html_extras(pytester.path / "parallel.html")  # pytest-html extras crossed from the workers
    failed = extras["test_suite.py::test_accuracy[clf-classify=variant_1-small]"]
    assert len(failed) == 1 and "<td>accuracy</td><td>0.5</td><td>&gt;= 0.99</td><td>FAIL</td>" in failed[0]
    assert all(len(extras[f"test_suite.py::test_no_errors[clf-classify=variant_{v}-{d}]"]) == 1
               for v in (0, 1) for d in ("small", "hard"))

