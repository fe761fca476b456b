"""Resolving a flow's named connection to credentials, without promptflow's connection store.

Order: experiment.yaml, the project's ``.env`` (the seed's ``aoai={...}`` lines), environment
variables in the GenAIOps template's style (``AOAI_API_KEY``, ...), and else the embedded model.
A ``CustomConnection`` is read from the same sources; with no secret in any of them, its endpoint
and key fields are filled with the embedded model's. Nothing is written anywhere, and a ``source``
never contains a secret.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import ConnectionSpec
from ..errors import SpecError, Where
from ..scrub import remember_secrets

AZURE = "AzureOpenAIConnection"
OPENAI = "OpenAIConnection"
CUSTOM = "CustomConnection"
KINDS = (AZURE, OPENAI, CUSTOM)
DEFAULT_API_VERSION = "2024-02-01"
EMBEDDED_API_KEY = "embedded-model"

_FIELDS = ("api_key", "api_base", "api_version", "api_type")
_ALIASES = {"api_endpoint": "api_base"}
#: the fields of a CustomConnection that the embedded model fills when it has no secret
CUSTOM_ENDPOINT_FIELDS = ("api_base", "endpoint", "azure_endpoint", "base_url", "api_endpoint")
CUSTOM_KEY_FIELDS = ("api_key", "key", "azure_api_key", "openai_api_key")
_SECRET_WORDS = ("key", "secret", "password", "token")


@dataclass(frozen=True)
class Resolved:
    """A ready connection object and where its credentials came from (never the secret)."""

    connection: Any = field(repr=False)
    embedded: bool
    source: str
    address: str | None = None  # the endpoint its LLM calls go to, when known


def resolve_connection(
    name: str,
    kind: str = AZURE,
    *,
    declared: Mapping[str, ConnectionSpec],
    project_dir: Path,
    environ: Mapping[str, str],
    embedded: Callable[[], str],
) -> Resolved:
    """The connection ``name`` as a promptflow ``kind`` object, from the first source that has a key.

    ``embedded`` is called (to start or find the local model) only when no source has credentials. Its
    secrets become known secrets of this process, which no file it writes contains (``scrub.py``).
    """
    resolved = _resolve(name, kind, declared, Path(project_dir), environ, embedded)
    connection = resolved.connection
    secrets = getattr(connection, "secrets", None)
    remember_secrets(getattr(connection, "api_key", None), *(secrets.values() if isinstance(secrets, Mapping) else ()))
    return resolved


def _resolve(name: str, kind: str, declared: Mapping[str, ConnectionSpec], project_dir: Path,
             environ: Mapping[str, str], embedded: Callable[[], str]) -> Resolved:
    if kind == CUSTOM:
        return _resolve_custom(name, declared, Path(project_dir), environ, embedded)
    if kind not in KINDS:
        return _resolve_other(name, kind, declared, Path(project_dir))
    found = (
        _from_declared(name, declared)
        or _from_dotenv(name, Path(project_dir) / ".env")
        or _from_environ(name, environ)
    )
    if found is not None:
        values, source = found
        connection = _build(name, kind, values, source)
        return Resolved(connection, embedded=False, source=source, address=_address(connection))
    url = embedded().rstrip("/")
    values = {"api_key": EMBEDDED_API_KEY, "api_base": url, "api_type": "azure"}
    if kind == OPENAI:
        values["api_base"] = f"{url}/v1"
    connection = _build(name, kind, values, "")
    return Resolved(connection, embedded=True, source=f"embedded model at {url}", address=_address(connection))


def _address(connection: Any) -> str | None:
    return getattr(connection, "api_base", None) or getattr(connection, "base_url", None)


def _resolve_custom(name: str, declared: Mapping[str, ConnectionSpec], project_dir: Path,
                    environ: Mapping[str, str], embedded: Callable[[], str]) -> Resolved:
    """A CustomConnection from the first source that names it; with no secret, the embedded model's
    address and key go into its empty endpoint and key fields (``api_base``/``api_key`` if it has none)."""
    found = (_custom_declared(name, declared) or _custom_dotenv(name, project_dir / ".env")
             or _custom_environ(name, environ))
    configs, secrets, source = found or ({}, {}, "")
    if any(value for value in secrets.values()):
        return Resolved(_custom(configs, secrets), embedded=False, source=source, address=_endpoint(configs))
    url = embedded().rstrip("/")
    fields = {**configs, **secrets}
    if not any(key in fields for key in CUSTOM_ENDPOINT_FIELDS + CUSTOM_KEY_FIELDS):
        configs, secrets = {**configs, "api_base": ""}, {**secrets, "api_key": ""}
    configs = {key: value or (url if key in CUSTOM_ENDPOINT_FIELDS else value) for key, value in configs.items()}
    secrets = {key: value or (EMBEDDED_API_KEY if key in CUSTOM_KEY_FIELDS else value)
               for key, value in secrets.items()}
    return Resolved(_custom(configs, secrets), embedded=True, source=f"embedded model at {url}",
                    address=_endpoint(configs))


def _resolve_other(name: str, kind: str, declared: Mapping[str, ConnectionSpec], project_dir: Path) -> Resolved:
    """A connection of another promptflow type (CognitiveSearchConnection, SerpConnection, ...): only from
    credentials declared in experiment.yaml or on a ``.env`` line; the embedded model cannot stand in."""
    import promptflow.connections

    spec = declared.get(name)
    found = ({**spec.values, **spec.configs, **spec.secrets}, str(spec.where or "experiment.yaml")) if spec else None
    found = found if found and any(found[0].values()) else _dotenv_entry(name, project_dir / ".env")
    make = getattr(promptflow.connections, kind, None)
    if not found or not any(found[0].values()) or not callable(make):
        raise SpecError(None, f"connection {name!r} is a {kind}, which cannot be made without credentials",
                        "declare it with its credentials in experiment.yaml connections or a .env line "
                        f"{name}={{...}}, or make the tool take one of {', '.join(KINDS)}")
    values, source = found
    try:
        return Resolved(make(**{key: value for key, value in values.items() if value != ""}), embedded=False,
                        source=source)
    except TypeError as exc:  # a required field is missing
        raise SpecError(source, f"connection {name!r} ({kind}): {exc}", f"give the fields a {kind} takes") from None


def _custom(configs: Mapping[str, str], secrets: Mapping[str, str]) -> Any:
    from promptflow.connections import CustomConnection

    return CustomConnection(configs=dict(configs), secrets=dict(secrets))


def _endpoint(configs: Mapping[str, str]) -> str | None:
    return next((configs[key] for key in CUSTOM_ENDPOINT_FIELDS if configs.get(key)), None)


def _split(values: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Flat ``key: value`` pairs as (configs, secrets): a secret is a field named like a key or password."""
    configs: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for key, value in values.items():
        text = "" if value is None else str(value).strip()
        is_secret = key in CUSTOM_KEY_FIELDS or any(word in key.casefold() for word in _SECRET_WORDS)
        (secrets if is_secret else configs)[key] = text
    return configs, secrets


def _custom_declared(name: str, declared: Mapping[str, ConnectionSpec]) -> tuple[dict, dict, str] | None:
    spec = declared.get(name)
    if spec is None:
        return None
    configs, secrets = _split(spec.values)
    configs.update(spec.configs)
    secrets.update(spec.secrets)
    return configs, secrets, str(spec.where or "experiment.yaml")


def _custom_dotenv(name: str, path: Path) -> tuple[dict, dict, str] | None:
    """A ``.env`` line ``name={...}``: flat fields, or the template's ``{"configs": ..., "secrets": ...}``."""
    found = _dotenv_entry(name, path)
    if found is None:
        return None
    values, source = found
    nested = {part: values.pop(part) for part in ("configs", "secrets") if isinstance(values.get(part), dict)}
    configs, secrets = _split(values)
    configs.update({k: str(v) for k, v in nested.get("configs", {}).items()})
    secrets.update({k: str(v) for k, v in nested.get("secrets", {}).items()})
    return configs, secrets, source


def _custom_environ(name: str, environ: Mapping[str, str]) -> tuple[dict, dict, str] | None:
    found = _from_environ(name, environ)
    if found is None:
        return None
    values, source = found
    configs, secrets = _split(values)
    return configs, secrets, source


def _build(name: str, kind: str, values: Mapping[str, str], source: str) -> Any:
    from promptflow.connections import AzureOpenAIConnection, OpenAIConnection

    if kind == OPENAI:
        return OpenAIConnection(api_key=values["api_key"], base_url=values.get("api_base") or None)
    if not values.get("api_base"):
        raise SpecError(
            source, f"connection {name!r} has an api_key but no api_base", "add the Azure OpenAI endpoint"
        )
    return AzureOpenAIConnection(
        api_base=values["api_base"],
        api_key=values["api_key"],
        api_type=values.get("api_type") or "azure",
        api_version=values.get("api_version") or DEFAULT_API_VERSION,
    )


def _credentials(values: Mapping[str, Any]) -> dict[str, str] | None:
    """The known fields of ``values``, or None when there is no (non-empty) api_key."""
    picked: dict[str, str] = {}
    for key, value in sorted(values.items(), key=lambda item: item[0] in _ALIASES):
        key = _ALIASES.get(key, key)
        if key in _FIELDS and value is not None and str(value).strip():
            picked.setdefault(key, str(value).strip())
    return picked if picked.get("api_key") else None


def _from_declared(name: str, declared: Mapping[str, ConnectionSpec]) -> tuple[dict[str, str], str] | None:
    spec = declared.get(name)
    if spec is None:
        return None
    values = _credentials(spec.values)
    return (values, str(spec.where or "experiment.yaml")) if values else None


def _from_dotenv(name: str, path: Path) -> tuple[dict[str, str], str] | None:
    found = _dotenv_entry(name, path)
    credentials = _credentials(found[0]) if found else None
    return (credentials, found[1]) if found and credentials else None


def _dotenv_entry(name: str, path: Path) -> tuple[dict[str, Any], str] | None:
    """The JSON object of the last ``name={...}`` line of ``.env``; every connection line must be valid."""
    if not path.is_file():
        return None
    found: tuple[dict[str, Any], str] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        where = Where(path, number)
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise SpecError(where, "expected NAME=VALUE", 'write e.g. aoai={"api_key": "...", "api_base": "..."}')
        ours = key.casefold() == name.casefold()
        if not ours and not value.startswith("{"):
            continue  # a plain variable, not a connection line
        try:
            values = json.loads(value)
        except json.JSONDecodeError as exc:
            raise SpecError(where, f"the value of {key} is not valid JSON ({exc.msg})", "fix the JSON object") from None
        if not isinstance(values, dict):
            raise SpecError(where, f"the value of {key} is not a JSON object", 'write {"api_key": ...}')
        if ours:
            found = (values, f".env:{number}")
    return found


def env_prefix(name: str) -> str:
    """The prefix of a connection's environment variables, the template's way: ``aoai`` -> ``AOAI``
    (``AOAI_API_KEY``, ``AOAI_API_BASE``, ...)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _from_environ(name: str, environ: Mapping[str, str]) -> tuple[dict[str, str], str] | None:
    prefix = env_prefix(name)
    values = {field: environ.get(f"{prefix}_{field.upper()}", "") for field in _FIELDS}
    if not values["api_base"]:
        values["api_base"] = environ.get(f"{prefix}_API_ENDPOINT", "")
    credentials = _credentials(values)
    return (credentials, f"environment {prefix}_API_KEY") if credentials else None


#: promptflow's model configuration classes (promptflow.core) and the connection type each is made from
MODEL_CONFIGS = {"AzureOpenAIModelConfiguration": AZURE, "OpenAIModelConfiguration": OPENAI}


def model_config_connection(value: Any) -> tuple[str, str] | None:
    """(connection name, type) of an init value that is a model configuration naming a connection:
    ``{"connection": "aoai", "azure_deployment": ...}`` (``"model"`` for OpenAI) or such an object."""
    if isinstance(value, Mapping):
        name = value.get("connection")
        kind = OPENAI if "model" in value and "azure_deployment" not in value else AZURE
    else:
        name = getattr(value, "connection", None)
        kind = MODEL_CONFIGS.get(type(value).__name__, "")
    return (name, kind) if kind and isinstance(name, str) and name else None


def resolve_model_config(value: Any, connection: Any) -> Any:
    """The model configuration with the connection's endpoint and key in place of its name (a dict stays
    a dict: promptflow builds the class its init parameter is annotated with)."""
    azure = hasattr(connection, "api_base")
    if not isinstance(value, Mapping):
        if azure:
            return type(value).from_connection(connection, azure_deployment=value.azure_deployment)
        return type(value).from_connection(connection, model=value.model)
    rest = {key: item for key, item in value.items() if key != "connection"}
    if azure:
        return {**rest, "azure_endpoint": connection.api_base, "api_key": connection.api_key,
                "api_version": connection.api_version}
    return {**rest, "base_url": connection.base_url, "api_key": connection.api_key}
