"""Connection resolution: source order, .env parsing, env vars, the embedded fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from promptflow.connections import AzureOpenAIConnection, OpenAIConnection  # before HOME moves

from pytest_promptflow.config import ConnectionSpec
from pytest_promptflow.errors import SpecError, Where
from pytest_promptflow.llm.connections import Resolved, resolve_connection

URL = "http://127.0.0.1:5555"
SECRET = "s3cret-key"


def no_model() -> str:
    raise AssertionError("the embedded model must not be asked for")


def resolve(tmp_path: Path, name: str = "aoai", kind: str = "AzureOpenAIConnection", *,
            declared: dict[str, ConnectionSpec] | None = None,
            environ: dict[str, str] | None = None, embedded=no_model) -> Resolved:
    return resolve_connection(name, kind, declared=declared or {}, project_dir=tmp_path,
                              environ=environ or {}, embedded=embedded)


def dotenv(tmp_path: Path, *lines: str) -> None:
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")


def aoai_line(key: str = SECRET, base: str = "https://dotenv.openai.azure.com/") -> str:
    return "aoai=" + json.dumps({"api_key": key, "api_base": base, "api_type": "azure",
                                 "api_version": "2023-07-01-preview"})


def spec(**values: str) -> dict[str, ConnectionSpec]:
    where = Where("use_cases/x/experiment.yaml", 7)
    return {"aoai": ConnectionSpec("aoai", "AzureOpenAIConnection", values, where)}


ENV = {"AOAI_API_KEY": SECRET, "AOAI_API_BASE": "https://env.openai.azure.com/",
       "AOAI_API_VERSION": "2024-06-01"}


def test_declared_wins_over_dotenv_and_environment(tmp_path: Path) -> None:
    dotenv(tmp_path, aoai_line())
    got = resolve(tmp_path, environ=ENV, declared=spec(
        api_key=SECRET, api_endpoint="https://yaml.openai.azure.com/", api_version="2024-02-15-preview"))
    assert isinstance(got.connection, AzureOpenAIConnection)
    assert got.connection.api_base == "https://yaml.openai.azure.com/"
    assert got.connection.api_version == "2024-02-15-preview"
    assert (got.embedded, got.source) == (False, "use_cases/x/experiment.yaml:7")


def test_empty_declared_key_falls_through_to_dotenv(tmp_path: Path) -> None:
    dotenv(tmp_path, "# the seed's connection", "", "export OTHER=plain value", aoai_line())
    got = resolve(tmp_path, environ=ENV, declared=spec(api_key="", api_base="https://yaml/"))
    assert got.connection.api_base == "https://dotenv.openai.azure.com/"
    assert got.connection.api_key == SECRET
    assert got.connection.api_version == "2023-07-01-preview"
    assert got.source == ".env:4"


def test_environment_variables_in_template_style(tmp_path: Path) -> None:
    dotenv(tmp_path, aoai_line(key=""))  # an empty key counts as none
    got = resolve(tmp_path, environ=ENV)
    assert got.connection.api_base == "https://env.openai.azure.com/"
    assert got.connection.api_version == "2024-06-01"
    assert got.connection.api_type == "azure"
    assert got.source == "environment AOAI_API_KEY"


def test_environment_endpoint_alias_and_name_case(tmp_path: Path) -> None:
    environ = {"MY_AOAI_API_KEY": SECRET, "MY_AOAI_API_ENDPOINT": "https://alias/"}
    got = resolve(tmp_path, "my-aoai", environ=environ)
    assert got.connection.api_base == "https://alias/"
    assert got.connection.api_version == "2024-02-01"


def test_openai_kind_from_environment(tmp_path: Path) -> None:
    got = resolve(tmp_path, "openai", "OpenAIConnection", environ={"OPENAI_API_KEY": SECRET})
    assert isinstance(got.connection, OpenAIConnection)
    assert got.connection.api_key == SECRET


def test_azure_key_without_endpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="environment AOAI_API_KEY: .*no api_base"):
        resolve(tmp_path, environ={"AOAI_API_KEY": SECRET})


@pytest.mark.parametrize("line, problem", [
    ("aoai={not json", "not valid JSON"),
    ('aoai=["a list"]', "not a JSON object"),
    ("aoai=plain", "not valid JSON"),
    ("other={broken", "not valid JSON"),
    ("just words", "expected NAME=VALUE"),
])
def test_malformed_dotenv_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    dotenv(tmp_path, "# comment", line)
    with pytest.raises(SpecError, match=problem) as info:
        resolve(tmp_path, environ=ENV)
    assert str(info.value).startswith(f"{tmp_path / '.env'}:2: ")
    assert SECRET not in str(info.value)


def test_embedded_fallback_azure(tmp_path: Path) -> None:
    calls: list[int] = []
    got = resolve(tmp_path, declared=spec(api_key=""), embedded=lambda: calls.append(1) or URL + "/")
    assert calls == [1]
    assert got.embedded and got.source == f"embedded model at {URL}"
    conn = got.connection
    assert isinstance(conn, AzureOpenAIConnection)
    assert (conn.api_base, conn.api_key, conn.api_type, conn.api_version) == (
        URL, "embedded-model", "azure", "2024-02-01")


def test_embedded_fallback_openai(tmp_path: Path) -> None:
    got = resolve(tmp_path, kind="OpenAIConnection", embedded=lambda: URL)
    assert isinstance(got.connection, OpenAIConnection)
    assert (got.connection.base_url, got.connection.api_key) == (URL + "/v1", "embedded-model")


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="use one of AzureOpenAIConnection, OpenAIConnection"):
        resolve(tmp_path, kind="SerpConnection")


def test_source_and_repr_never_show_the_secret(tmp_path: Path) -> None:
    for got in (resolve(tmp_path, environ=ENV), resolve(tmp_path, declared=spec(
            api_key=SECRET, api_base="https://yaml/"))):
        assert SECRET not in got.source and SECRET not in repr(got)


def test_writes_nothing_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir(), project.mkdir()
    monkeypatch.setenv("HOME", str(home))
    dotenv(project, aoai_line())
    resolve(project)
    resolve(project, "other", "OpenAIConnection", embedded=lambda: URL)
    assert list(home.rglob("*")) == []
    assert sorted(p.name for p in project.iterdir()) == [".env"]
