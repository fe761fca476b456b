"""SDK clients a flow builds from AZURE_OPENAI_* / OPENAI_*: with none set they reach the embedded model,
started only when one calls; a user's own values are never touched; the environment comes back."""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import openai
import pytest
from conftest import outcomes, run

from pytest_promptflow.llm.calls import ReplayMiss
from pytest_promptflow.llm.sdk_environment import PLACEHOLDER, Fallback, dotenv_names, unconfigured
from pytest_promptflow.llm.settings import LLMSettings
from pytest_promptflow.session import PromptflowSession

VARIABLES = ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_BASE",
             "AZURE_OPENAI_API_VERSION", "AZURE_OPENAI_DEPLOYMENT", "OPENAI_API_VERSION", "OPENAI_API_KEY",
             "OPENAI_BASE_URL")

#: A flex entry that reports what it sees of the environment (no model call).
SEES_PY = '''\
import os


def sees(text: str) -> dict:
    return {name.lower(): os.environ.get(name, "(unset)")
            for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY")}
'''


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_family_with_any_variable_set_is_left_alone_and_restore_puts_back_exactly() -> None:
    environ = {"OPENAI_API_KEY": "sk-user-own", "OPENAI_API_VERSION": "2025-01-01", "PATH": "/bin"}
    before = dict(environ)
    fallback = Fallback()
    assert [f.connection for f in fallback.apply(environ)] == ["env:AZURE_OPENAI"]
    assert environ["OPENAI_API_KEY"] == "sk-user-own" and "OPENAI_BASE_URL" not in environ
    assert environ["OPENAI_API_VERSION"] == "2025-01-01"  # the user's, though the Azure family uses it
    assert environ["AZURE_OPENAI_ENDPOINT"] == PLACEHOLDER and environ["AZURE_OPENAI_API_KEY"]
    fallback.restore(environ)
    assert environ == before


def test_a_key_in_a_dotenv_file_makes_the_family_the_users(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# mine\nexport AZURE_OPENAI_API_KEY='abc'\nOPENAI_BASE_URL=\nOTHER=1\n")
    names = dotenv_names([tmp_path / ".env", tmp_path / "missing" / ".env"])
    assert names == {"AZURE_OPENAI_API_KEY", "OTHER"}
    assert [f.connection for f in unconfigured({}, names)] == ["env:OPENAI"]


def test_an_sdk_client_from_the_environment_starts_the_model_only_when_it_calls(
        tmp_path: Path, bare_environment: None) -> None:
    session = PromptflowSession(tmp_path, 1, None)
    try:
        layer = session.calls  # what every flow run does first
        assert os.environ["OPENAI_BASE_URL"] == f"{PLACEHOLDER}/v1" and not session.embedded.started
        client = openai.AzureOpenAI(max_retries=0)  # endpoint, key and version from the environment
        request = client.chat.completions.with_raw_response.create(
            model="gpt-35-turbo", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
        assert request.parse().choices[0].message.content and session.embedded.started
        assert str(request.http_request.url).startswith(session.embedded.address() + "/openai/deployments/")
        sent = httpx2.Request("POST", f"{PLACEHOLDER}/openai/deployments/d/chat/completions", json={})
        call = layer._describe(sent)
        assert call is not None and call.connection == "env:AZURE_OPENAI"
        assert layer.tally == {"live": 1}
    finally:
        session.close()
    assert not any(name in os.environ for name in VARIABLES)


def test_the_users_own_values_reach_the_flow_and_the_header_names_only_the_fallback(
        project, monkeypatch: pytest.MonkeyPatch, bare_environment: None) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-own")
    project.write("flows/sees/flow.flex.yaml", "entry: sees:sees\n")
    project.write("flows/sees/sees.py", SEES_PY)
    project.data()
    project.write("test_env.py", '''\
import pytest


@pytest.mark.promptflow(flow="flows/sees", data="data/small.jsonl")
def test_sees(flow_run):
    seen = flow_run.rows[0].outputs
    assert seen["openai_api_key"] == "sk-user-own" and seen["openai_base_url"] == "(unset)"
    assert seen["azure_openai_endpoint"].startswith("http://127.0.0.1:9/")
''')
    project.write("conftest.py", '''\
import os

import pytest


@pytest.hookimpl(trylast=True)  # where a release starts its processes
def pytest_sessionfinish(session):
    with open("after-tests.txt", "w") as out:
        out.write(os.environ.get("AZURE_OPENAI_ENDPOINT", "(unset)"))
''')
    result = run(project.pytester, "test_env.py")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    result.stdout.fnmatch_lines(["promptflow: AZURE_OPENAI_* unset -> embedded model *(connections env:AZURE_OPENAI)"])
    assert (project.path / "after-tests.txt").read_text() == "(unset)"  # restored before a release runs
    assert {name: os.environ.get(name) for name in VARIABLES} == {name: None for name in VARIABLES} | {
        "OPENAI_API_KEY": "sk-user-own"}


def test_no_header_line_and_no_change_when_the_user_set_both_families(
        project, monkeypatch: pytest.MonkeyPatch, bare_environment: None) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-user-own")
    project.write(".env", "AZURE_OPENAI_ENDPOINT=https://mine.openai.azure.com\n")
    project.dag_flow()
    project.data()
    project.write("test_clf.py", '''\
import os

import pytest


@pytest.mark.promptflow(flow="flows/clf", data="data/small.jsonl")
def test_clf(flow_run):
    assert "AZURE_OPENAI_ENDPOINT" not in os.environ and "OPENAI_BASE_URL" not in os.environ
''')
    result = run(project.pytester, "test_clf.py")
    assert outcomes(result) == {"passed": 1}, result.stdout.str()
    result.stdout.no_fnmatch_line("*unset -> *")


def test_replay_never_starts_the_model_for_them(tmp_path: Path, bare_environment: None) -> None:
    session = PromptflowSession(tmp_path, 1, None, llm=LLMSettings(mode="replay", store=tmp_path / "store"))
    try:
        assert session.calls.settings.mode == "replay"  # active, as before any flow runs
        with pytest.raises(ReplayMiss):
            openai.OpenAI(max_retries=0).responses.create(model="gpt-4o-mini", input="Say hi.")
        assert not session.embedded.started
    finally:
        session.close()
