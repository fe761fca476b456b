"""A replay miss names the nearest recorded request of the same flow and node and what differs (a parameter, the
prompt with a short diff), in one line plus the diff, and says the cheapest fix: the items that missed, again, in
cache mode, which asks the model for the misses only. Against a real local endpoint (fault_endpoint.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project, run
from fault_endpoint import FaultEndpoint
from test_llm_faults import DUMP, case, endpoint, llm_project, rows  # noqa: F401  (endpoint, llm_project: fixtures)

from pytest_promptflow.llm.nearest import StoreIndex, differences, prompt_diff
from pytest_promptflow.llm.store import Answer, CallRequest, Store

TEXTS = ["alpha one", "beta two"]
TESTS = DUMP + case("test_echo", '"flows/echo_dag"')


def recorded(project: Project) -> Path:
    """The two rows' answers recorded (cache mode asks the endpoint once each); the store's folder."""
    rows(project, TEXTS)
    project.pytester.makepyfile(test_flows=TESTS)
    run(project.pytester).assert_outcomes(passed=1)
    return project.path / ".promptflow-llm"


def miss_section(result: pytest.RunResult) -> list[str]:
    """The lines of the item's error section, without its header."""
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if "ERROR at setup of test_echo" in line) + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(("____", "====", "promptflow: ")))
    return lines[start:end]


def test_a_changed_parameter_is_named_with_the_nearest_recorded_request_and_the_fix(
        llm_project: Project, endpoint: FaultEndpoint) -> None:  # noqa: F811  (the imported fixtures)
    store = recorded(llm_project)
    entries = sorted(store.rglob("*.json"))
    assert {json.loads(path.read_text())["recorded_by"]["node"] for path in entries} == {"echo"}
    dag = llm_project.path / "flows/echo_dag/flow.dag.yaml"
    dag.write_text(dag.read_text().replace("temperature: 0.0", "temperature: 0.7"))
    missed = run(llm_project.pytester, "--promptflow-llm=replay")
    assert missed.parseoutcomes()["errors"] == 1
    section = miss_section(missed)
    assert len(section) == 1, section  # one line: no prompt changed, so no diff
    assert "flow echo_dag, row 0 of dataset rows, node echo: no recorded answer for chat/completions" in section[0]
    assert "nearest recorded (flow echo_dag, node echo): " in section[0]
    assert "differs in temperature 0.0 -> 0.7 (and 1 more); rerun them with -k echo_dag --promptflow-llm=cache " \
           "(calls the model for the misses only)" in section[0]
    assert any(str(path.relative_to(store)) in section[0] for path in entries)
    missed.stdout.fnmatch_lines(["promptflow: flow echo_dag, 1 cell; no best cell: the flow did not run: see its "
                                 "items' failures"])  # not "set promptflow_primary_metrics"

    endpoint.reset()
    run(llm_project.pytester, "-k", "echo_dag", "--promptflow-llm=cache").assert_outcomes(passed=1)
    assert endpoint.count() == len(TEXTS)  # the two misses, nothing else
    run(llm_project.pytester, "--promptflow-llm=replay").assert_outcomes(passed=1)


def test_a_changed_prompt_shows_its_diff_also_against_entries_recorded_before_recorded_by(
        llm_project: Project, endpoint: FaultEndpoint) -> None:  # noqa: F811  (the imported fixtures)
    store = recorded(llm_project)
    for path in store.rglob("*.json"):  # as an older version wrote them
        entry = json.loads(path.read_text())
        del entry["recorded_by"]
        path.write_text(json.dumps(entry))
    template = llm_project.path / "flows/echo_dag/echo.jinja2"
    template.write_text(template.read_text().replace("Repeat the message.", "Repeat the message twice."))
    missed = run(llm_project.pytester, "--promptflow-llm=replay")
    section = miss_section(missed)
    assert "nearest recorded: " in section[0] and "differs in the prompt (and 1 more); rerun them" in section[0]
    assert section[1:] == ["  - system: Repeat the message.", "  + system: Repeat the message twice."]


def test_what_differs_between_two_requests():
    old = {"provider": "p", "kind": "chat/completions", "model": "m", "api_version": "1",
           "body": {"messages": [{"role": "user", "content": "Say A"}], "temperature": 0, "seed": 1}}
    new = {**old, "api_version": "2", "body": {"messages": [{"role": "user", "content": "Say B"}], "temperature": 0}}
    assert differences(old, new) == (["the prompt", 'api_version "1" -> "2"', "seed 1 -> unset"],
                                     ["  - user: Say A", "  + user: Say B"])
    long = "x" * 300
    cut = prompt_diff(f"user: {long} old end", f"user: {long} new end")
    assert cut[0].startswith("  - ...x") and cut[0].endswith("old end") and len(cut[0]) < 140
    many = prompt_diff("\n".join(map(str, range(20))), "\n".join(str(i * 2) for i in range(20)))
    assert len(many) == 9 and many[-1].startswith("  ... (")


def test_among_requests_with_the_nearest_prompt_the_one_with_the_fewest_other_differences_is_named(tmp_path: Path):
    store = Store(tmp_path)

    def ask(text: str, temperature: float) -> CallRequest:
        body = {"messages": [{"role": "system", "content": text}, {"role": "user", "content": "a good day"}],
                "temperature": temperature}
        return CallRequest("embedded", "chat/completions", "m", None, body)

    answer = Answer(200, "application/json", {"choices": [{"message": {"content": "positive"}}]})
    for temperature in (0.0, 0.7):
        store.put(ask("Answer with one word.", temperature), answer, recorded_by={"flow": "clf", "node": "classify"})
    index = StoreIndex(tmp_path)
    for temperature in (0.0, 0.7):  # whichever file comes first, each finds its own temperature
        nearest = index.nearest(ask("Answer with exactly one word.", temperature), "clf", "classify")
        assert nearest is not None
        assert nearest.recorded.path == store.path(ask("Answer with one word.", temperature))
        assert (nearest.differs, nearest.diff) == (["the prompt"], ["  - system: Answer with one word.",
                                                                    "  + system: Answer with exactly one word."])
    assert StoreIndex(tmp_path).nearest(ask("x", 0.0), "other", None) is not None  # same provider, kind, model
