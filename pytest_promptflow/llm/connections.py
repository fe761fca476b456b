"""Resolving a flow's named connection to credentials, without promptflow's connection store.

Order: experiment.yaml, the project's ``.env`` (the seed's ``aoai={...}`` lines), environment
variables in the GenAIOps template's style (``AOAI_API_KEY``, ...), and else the embedded model.
Nothing is written anywhere, and a ``source`` never contains a secret.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import ConnectionSpec
from ..errors import SpecError, Where

AZURE = "AzureOpenAIConnection"
OPENAI = "OpenAIConnection"
KINDS = (AZURE, OPENAI)
DEFAULT_API_VERSION = "2024-02-01"
EMBEDDED_API_KEY = "embedded-model"

_FIELDS = ("api_key", "api_base", "api_version", "api_type")
_ALIASES = {"api_endpoint": "api_base"}


@dataclass(frozen=True)
class Resolved:
    """A ready connection object and where its credentials came from (never the secret)."""

    connection: Any = field(repr=False)
    embedded: bool
    source: str


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

    ``embedded`` is called (to start or find the local model) only when no source has credentials.
    """
    if kind not in KINDS:
        raise SpecError(None, f"connection {name!r} has type {kind!r}", f"use one of {', '.join(KINDS)}")
    found = (
        _from_declared(name, declared)
        or _from_dotenv(name, Path(project_dir) / ".env")
        or _from_environ(name, environ)
    )
    if found is not None:
        values, source = found
        return Resolved(_build(name, kind, values, source), embedded=False, source=source)
    url = embedded().rstrip("/")
    values = {"api_key": EMBEDDED_API_KEY, "api_base": url, "api_type": "azure"}
    if kind == OPENAI:
        values["api_base"] = f"{url}/v1"
    return Resolved(_build(name, kind, values, ""), embedded=True, source=f"embedded model at {url}")


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
    if not path.is_file():
        return None
    found: tuple[dict[str, str], str] | None = None
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
            credentials = _credentials(values)
            found = (credentials, f".env:{number}") if credentials else None
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
