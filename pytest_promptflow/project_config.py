"""The project's settings without a pytest session, for ``pytest-promptflow release``: the plugin's own
options and ini keys (names, types and defaults as ``plugin.pytest_addoption`` declares them), read from the
project's ini file and the command's arguments, and the release hooks of the project's root ``conftest.py``.
It answers what a release asks of pytest's config (``rootpath``, ``inipath``, ``getoption``, ``getini``,
``hook``), so the release reads its settings with the session's own code (``plugin.release_settings``)."""

from __future__ import annotations

import argparse
import configparser
import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pluggy

ROOT_FILES = ("pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")
PREFIX = "--promptflow-"
_TRUE = ("1", "true", "yes", "y", "on", "t")


class _Declared:
    """Stands in for pytest's parser and its option group: keeps what ``pytest_addoption`` declares."""

    def __init__(self) -> None:
        self.options: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {}  # dest -> (flags, argparse kwargs)
        self.inis: dict[str, tuple[str | None, Any]] = {}  # name -> (type, default)

    def getgroup(self, *args: Any, **kwargs: Any) -> _Declared:
        return self

    def addoption(self, *flags: str, **kwargs: Any) -> None:
        self.options[kwargs.get("dest") or flags[0].lstrip("-").replace("-", "_")] = (flags, kwargs)

    def addini(self, name: str, help: str, type: str | None = None, default: Any = None) -> None:  # noqa: A002
        self.inis[name] = (type, default)


@functools.lru_cache(maxsize=1)
def declared() -> _Declared:
    """The plugin's options and ini keys, declared once by its own ``pytest_addoption``."""
    from .plugin import pytest_addoption

    found = _Declared()
    pytest_addoption(found)  # type: ignore[arg-type]  # it uses only getgroup, addoption and addini
    return found


def add_options(parser: argparse.ArgumentParser, dests: Sequence[str]) -> None:
    """The plugin's options ``dests`` on a command, without their ``--promptflow-`` prefix (``--target``)."""
    for dest in dests:
        flags, kwargs = declared().options[dest]
        parser.add_argument(*("--" + flag[len(PREFIX):] for flag in flags if flag.startswith(PREFIX)),
                            **{**kwargs, "dest": dest})


class _Hooks(pluggy.PluginManager):
    """pytest's way with hooks: plain ``pytest_promptflow_*`` functions are specifications (in hookspecs.py)
    and implementations (in a conftest)."""

    def parse_hookspec_opts(self, module_or_class: Any, name: str) -> pluggy.HookspecOpts | None:
        opts = super().parse_hookspec_opts(module_or_class, name)
        if opts is None and name.startswith("pytest_promptflow_"):
            return pluggy.HookspecOpts(firstresult=False, historic=False, warn_on_impl=None,
                                       warn_on_impl_args=None)
        return opts

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("pytest_promptflow_") and callable(getattr(plugin, name, None)):
            return pluggy.HookimplOpts(wrapper=False, hookwrapper=False, optionalhook=False, tryfirst=False,
                                       trylast=False, specname=None)
        return opts


class ProjectConfig:
    """What a release asks of pytest's config, for the project around a folder."""

    def __init__(self, rootpath: Path, options: Mapping[str, Any]) -> None:
        self.rootpath = rootpath
        self.inipath = next((rootpath / name for name in ROOT_FILES if (rootpath / name).is_file()), None)
        self._options = options
        self.pluginmanager = _Hooks("pytest")
        from .hookspecs import ReleaseHooks

        self.pluginmanager.add_hookspecs(ReleaseHooks)
        conftest = rootpath / "conftest.py"
        if conftest.is_file():
            self.pluginmanager.register(_load_conftest(conftest), str(conftest))
        self.hook = self.pluginmanager.hook

    def getoption(self, name: str) -> Any:
        """The command's value, else the option's declared default."""
        if self._options.get(name) is not None:
            return self._options[name]
        return declared().options[name][1].get("default") if name in declared().options else None

    def getini(self, name: str) -> Any:
        """The ini file's value as pytest types it (bool, linelist, string), else the declared default."""
        kind, default = declared().inis.get(name, (None, None))
        raw = ini_value(self.rootpath, name)
        if raw is None:
            return default if default is not None else ([] if kind == "linelist" else "")
        if kind == "bool":
            return raw if isinstance(raw, bool) else str(raw).strip().lower() in _TRUE
        if kind == "linelist":
            lines = raw if isinstance(raw, list) else str(raw).splitlines()
            return [str(line).strip() for line in lines if str(line).strip()]
        return str(raw)


def _load_conftest(path: Path) -> Any:
    """The project's root conftest.py as a module, its folder first on the path as pytest puts it."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("conftest", path)
    assert spec is not None and spec.loader is not None, f"{path} is a Python file"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def project_root(start: Path) -> Path:
    """The nearest folder above ``start`` with a pytest or project config file (pytest's rootdir, roughly)."""
    for folder in (start, *start.parents):
        if any((folder / name).is_file() for name in ROOT_FILES):
            return folder
    return start


def ini_value(folder: Path, key: str) -> Any:
    """Ini option ``key`` as written in the file pytest reads its options from in ``folder`` (``pytest.ini``,
    ``pyproject.toml``, ``tox.ini`` or ``setup.cfg``), None where unset; a TOML value keeps its type."""
    if (folder / "pytest.ini").is_file():
        return _ini_file_value(folder / "pytest.ini", "pytest", key)
    if (folder / "pyproject.toml").is_file():
        try:
            import tomllib
        except ImportError:  # Python 3.10: no TOML reader in the standard library
            return None
        try:
            with open(folder / "pyproject.toml", "rb") as file:
                options = tomllib.load(file).get("tool", {}).get("pytest", {}).get("ini_options", {})
        except (OSError, ValueError):  # pytest itself reports a broken pyproject.toml
            return None
        return options.get(key)
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        if (folder / name).is_file():
            return _ini_file_value(folder / name, section, key)
    return None


def _ini_file_value(path: Path, section: str, key: str) -> str | None:
    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read(path, encoding="utf-8")
    except configparser.Error:  # pytest itself reports a broken ini file
        return None
    return ini.get(section, key, fallback=None)
