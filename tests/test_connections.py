"""Connection resolution: source order, .env parsing, env vars, the embedded fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from promptflow.connections import AzureOpenAIConnection, CustomConnection, OpenAIConnection  # before HOME moves
from promptflow.core import AzureOpenAIModelConfiguration, OpenAIModelConfiguration

from pytest_promptflow.config import ConnectionSpec
from pytest_promptflow.errors import SpecError, Where
from pytest_promptflow.experiment import load_experiment
from pytest_promptflow.llm.connections import (
    Resolved,
    model_config_connection,
    resolve_connection,
    resolve_model_config,
)

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


def test_other_kind_without_credentials_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="'search' is a CognitiveSearchConnection, which cannot be made without "
                                        "credentials; declare it .* or a .env line search=.*, or make the tool take "
                                        "one of AzureOpenAIConnection, OpenAIConnection, CustomConnection"):
        resolve(tmp_path, "search", kind="CognitiveSearchConnection",
                declared={"search": ConnectionSpec("search", "CognitiveSearchConnection", {"api_key": ""})})


def test_other_kind_from_declared_credentials_or_dotenv(tmp_path: Path) -> None:
    from promptflow.connections import CognitiveSearchConnection, SerpConnection

    declared = {"search": ConnectionSpec("search", "CognitiveSearchConnection",
                                         {"api_key": SECRET, "api_base": "https://s/"}, Where("e.yaml", 4))}
    got = resolve(tmp_path, "search", "CognitiveSearchConnection", declared=declared)
    assert isinstance(got.connection, CognitiveSearchConnection) and got.connection.api_base == "https://s/"
    assert (got.embedded, got.source) == (False, "e.yaml:4")
    dotenv(tmp_path, "serp=" + json.dumps({"api_key": SECRET}))
    assert isinstance(resolve(tmp_path, "serp", "SerpConnection").connection, SerpConnection)
    dotenv(tmp_path, "serp=" + json.dumps({"api_base": "https://x/"}))
    with pytest.raises(SpecError, match=r"^\.env:1: connection 'serp' \(SerpConnection\): .*api_key"):
        resolve(tmp_path, "serp", "SerpConnection")


CUSTOM = "CustomConnection"


def custom_spec(configs: dict[str, str], secrets: dict[str, str], **values: str) -> dict[str, ConnectionSpec]:
    where = Where("experiment.yaml", 3)
    return {"svc": ConnectionSpec("svc", CUSTOM, values, where, configs=configs, secrets=secrets)}


def test_custom_declared_with_a_secret_is_used_as_is(tmp_path: Path) -> None:
    got = resolve(tmp_path, "svc", CUSTOM, declared=custom_spec(
        {"endpoint": "https://svc.example/", "model": "m"}, {"key": SECRET}))
    assert isinstance(got.connection, CustomConnection)
    assert (got.embedded, got.source, got.address) == (False, "experiment.yaml:3", "https://svc.example/")
    assert got.connection.configs == {"endpoint": "https://svc.example/", "model": "m"}
    assert got.connection.secrets == {"key": SECRET}


def test_custom_without_a_secret_gets_the_embedded_model_in_its_empty_endpoint_and_key_fields(tmp_path: Path) -> None:
    got = resolve(tmp_path, "svc", CUSTOM, embedded=lambda: URL + "/", declared=custom_spec(
        {"endpoint": "", "model": "m", "region": ""}, {"key": "", "password": ""}))
    assert got.embedded and got.address == URL
    assert got.connection.configs == {"endpoint": URL, "model": "m", "region": ""}
    assert got.connection.secrets == {"key": "embedded-model", "password": ""}


def test_custom_named_nowhere_is_the_embedded_model_as_api_base_and_api_key(tmp_path: Path) -> None:
    got = resolve(tmp_path, "svc", CUSTOM, embedded=lambda: URL)
    assert (got.connection.configs, got.connection.secrets) == ({"api_base": URL}, {"api_key": "embedded-model"})
    assert got.source == f"embedded model at {URL}"


def test_custom_flat_declared_values_split_into_configs_and_secrets(tmp_path: Path) -> None:
    got = resolve(tmp_path, "svc", CUSTOM, declared=custom_spec({}, {}, api_base="https://b/", api_key=SECRET,
                                                                   tenant="t"))
    assert got.connection.configs == {"api_base": "https://b/", "tenant": "t"}
    assert got.connection.secrets == {"api_key": SECRET}


@pytest.mark.parametrize("value", [
    {"configs": {"endpoint": "https://dot/"}, "secrets": {"token": SECRET}},
    {"endpoint": "https://dot/", "token": SECRET},
])
def test_custom_from_a_dotenv_line_nested_or_flat(tmp_path: Path, value: dict) -> None:
    dotenv(tmp_path, "svc=" + json.dumps(value))
    got = resolve(tmp_path, "svc", CUSTOM)
    assert (got.connection.configs, got.connection.secrets) == ({"endpoint": "https://dot/"}, {"token": SECRET})
    assert (got.embedded, got.source) == (False, ".env:1")


def test_custom_from_environment_variables(tmp_path: Path) -> None:
    got = resolve(tmp_path, "svc", CUSTOM, environ={"SVC_API_KEY": SECRET, "SVC_API_BASE": "https://env/"})
    assert (got.connection.configs, got.connection.secrets) == ({"api_base": "https://env/"}, {"api_key": SECRET})
    assert got.source == "environment SVC_API_KEY"


def test_custom_connection_from_experiment_yaml_reads_variables(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The template's shape: connection_type, configs, secrets, ${VAR} from the environment."""
    (tmp_path / "flow").mkdir()
    (tmp_path / "flow" / "flow.dag.yaml").write_text("nodes: []\n")
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "experiment.yaml").write_text(
        "flow: flow\ndatasets:\n- name: d\n  source: d.jsonl\nconnections:\n- name: svc\n"
        "  connection_type: CustomConnection\n  configs:\n    api_base: ${SVC_BASE}\n"
        "  secrets:\n    api_key: ${SVC_KEY}\n")
    monkeypatch.setenv("SVC_BASE", "https://yaml/")
    monkeypatch.setenv("SVC_KEY", SECRET)
    declared = {c.name: c for c in load_experiment(tmp_path / "experiment.yaml").connections}
    got = resolve(tmp_path, "svc", CUSTOM, declared=declared)
    assert (got.connection.configs, got.connection.secrets) == ({"api_base": "https://yaml/"}, {"api_key": SECRET})
    assert got.source.endswith("experiment.yaml:6") and SECRET not in repr(got)


@pytest.mark.parametrize("value, named", [
    ({"connection": "aoai", "azure_deployment": "gpt"}, ("aoai", "AzureOpenAIConnection")),
    ({"connection": "oai", "model": "gpt-4o"}, ("oai", "OpenAIConnection")),
    (AzureOpenAIModelConfiguration(azure_deployment="gpt", connection="aoai"), ("aoai", "AzureOpenAIConnection")),
    (OpenAIModelConfiguration(model="gpt-4o", connection="oai"), ("oai", "OpenAIConnection")),
    ({"azure_deployment": "gpt", "azure_endpoint": "https://x/"}, None),
    ("aoai", None),
])
def test_model_configurations_that_name_a_connection(value: object, named: tuple[str, str] | None) -> None:
    assert model_config_connection(value) == named


def test_model_configuration_resolved_from_our_connection(tmp_path: Path) -> None:
    azure = resolve(tmp_path, embedded=lambda: URL).connection
    openai = resolve(tmp_path, "oai", "OpenAIConnection", embedded=lambda: URL).connection
    assert resolve_model_config({"connection": "aoai", "azure_deployment": "gpt"}, azure) == {
        "azure_deployment": "gpt", "azure_endpoint": URL, "api_key": "embedded-model", "api_version": "2024-02-01"}
    assert resolve_model_config({"connection": "oai", "model": "m"}, openai) == {
        "model": "m", "base_url": URL + "/v1", "api_key": "embedded-model"}
    made = resolve_model_config(AzureOpenAIModelConfiguration(azure_deployment="gpt", connection="aoai"), azure)
    assert isinstance(made, AzureOpenAIModelConfiguration) and made.connection is None
    assert (made.azure_endpoint, made.azure_deployment) == (URL, "gpt")
    made = resolve_model_config(OpenAIModelConfiguration(model="m", connection="oai"), openai)
    assert isinstance(made, OpenAIModelConfiguration) and made.base_url == URL + "/v1"


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
