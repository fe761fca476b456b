"""Where a cell's rows run (``--promptflow-backend``): this process's threads, the default, or a backend that
runs them elsewhere (``engine.Backend``). A backend's module is imported only when it is chosen."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..engine import Backend

#: backend name -> "module:factory" (relative to this package) making it from the session's options; the
#: factory takes ``getoption`` (pytest's ``config.getoption``) and returns an ``engine.Backend``
BACKENDS: dict[str, str] = {"threads": "", "ray": "ray:make", "azureml": "azureml:make"}


def make_backend(name: str, getoption: Callable[[str], Any]) -> Backend | None:
    """The named backend, or None for this process's threads."""
    where = BACKENDS[name]
    if not where:
        return None
    module_name, factory = where.split(":")
    module = importlib.import_module(f".{module_name}", __name__)
    backend: Backend = getattr(module, factory)(getoption)
    return backend
