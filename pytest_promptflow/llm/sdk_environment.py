"""OpenAI SDK clients that a flow or an evaluator builds itself from the environment (``AzureOpenAI()``,
``OpenAI()``): when none of their family's variables is set, they reach the embedded model.

While the session runs flows, the family's missing variables point at ``PLACEHOLDER``, an address
the call layer routes to the embedded model only when a request must be sent: the model starts only
if such a call is made, and replay (answered from the store) never starts it. A family with any of
its variables set, in the environment or in a ``.env`` file that the flow may load itself
(``load_dotenv()``, as promptflow's examples do), is the user's and is left alone; the environment
is restored at session close.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Mapping, MutableMapping

from .connections import DEFAULT_API_VERSION, EMBEDDED_API_KEY

#: Nothing listens here (port 9, discard): a client outside the call layer fails at once.
PLACEHOLDER = "http://127.0.0.1:9/pytest-promptflow-embedded-model"


@dataclass(frozen=True)
class Family:
    """The variables one SDK client class reads, and what its calls count against."""

    connection: str  # the name in accounting and limits (``promptflow_llm_limits``)
    path: str  # where under PLACEHOLDER its client sends
    users: tuple[str, ...]  # any of these set: the user configured this client
    fallback: Mapping[str, str] = field(default_factory=dict)  # set only where unset


FAMILIES = (
    # the SDK reads the first three; promptflow's examples also AZURE_OPENAI_API_BASE (an older name),
    # the GenAIOps template's prompty configurations ${env:AZURE_OPENAI_API_VERSION} and _DEPLOYMENT
    Family("env:AZURE_OPENAI", "/openai",
           ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_BASE"),
           {"AZURE_OPENAI_ENDPOINT": PLACEHOLDER, "AZURE_OPENAI_API_KEY": EMBEDDED_API_KEY,
            "OPENAI_API_VERSION": DEFAULT_API_VERSION, "AZURE_OPENAI_API_BASE": PLACEHOLDER,
            "AZURE_OPENAI_API_VERSION": DEFAULT_API_VERSION, "AZURE_OPENAI_DEPLOYMENT": "gpt-35-turbo"}),
    Family("env:OPENAI", "/v1", ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
           {"OPENAI_BASE_URL": f"{PLACEHOLDER}/v1", "OPENAI_API_KEY": EMBEDDED_API_KEY}),
)


def unconfigured(environ: Mapping[str, str], dotenv: Collection[str] = ()) -> list[Family]:
    """The families the user set none of the variables of, in ``environ`` or as ``dotenv`` names."""
    return [family for family in FAMILIES
            if not any(environ.get(name) or name in dotenv for name in family.users)]


def dotenv_names(files: Iterable[Path]) -> set[str]:
    """The variables that ``.env`` files set to a value (``NAME=value``, ``export NAME=value``)."""
    names = set()
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            name, sep, value = line.strip().removeprefix("export ").partition("=")
            if sep and value.strip().strip("'\"") and not name.startswith("#"):
                names.add(name.strip())
    return names


def describe(families: list[Family]) -> str:
    """``AZURE_OPENAI_* / OPENAI_*``: the families, as the header names them."""
    return " / ".join(f"{family.connection.removeprefix('env:')}_*" for family in families)


class Fallback:
    """The variables set for unconfigured families, with what was there before, to put back."""

    def __init__(self) -> None:
        self.families: list[Family] = []
        self._applied = False
        self._changed: dict[str, tuple[str | None, str]] = {}  # name -> (before, what we set)

    def apply(self, environ: MutableMapping[str, str], dotenv: Collection[str] = ()) -> list[Family]:
        """Sets the missing variables of every unconfigured family (once); returns those families."""
        if not self._applied:
            self._applied, self.families = True, unconfigured(environ, dotenv)
            for family in self.families:
                for name, value in family.fallback.items():
                    if not environ.get(name):
                        self._changed[name] = (environ.get(name), value)
                        environ[name] = value
        return self.families

    def restore(self, environ: MutableMapping[str, str]) -> None:
        """Puts back what ``apply`` set (unset again if it was unset), unless something changed it since."""
        for name, (before, ours) in self._changed.items():
            if environ.get(name) != ours:
                continue
            if before is None:
                environ.pop(name, None)
            else:
                environ[name] = before
        self.families, self._applied, self._changed = [], False, {}
