"""promptflow's errors from loading a flow, as one line: ``file[:line]: flow F, node N: problem; fix``.

``FlowExecutor.create`` raises promptflow exceptions (``ResolveToolError`` wrapping the real cause as
``inner_exception``, ``NodeCircularDependency``, ``FlowEntryInitializationError``, ...) whose messages
repeat promptflow's internals; here they become a SpecError that points at the user's file: the line of
their code that raised, else the node's line in the flow file. The original exception stays its cause,
so ``-vv`` / ``--tb=long`` can still show promptflow's traceback.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import SpecError, Where

#: promptflow's inner exception class -> what to do about it
FIXES = {
    "PythonLoadError": "fix that module (`python {file}` in the flow folder shows the error)",
    "InvalidSource": "check the node's source.path: it is relative to the flow folder",
    "GetConnectionError": "define connection {connection!r} in experiment.yaml `connections` (or a .env line), "
                          "or name a connection that is defined",
    "NodeCircularDependency": "break the cycle: no node may take its input from its own output, directly or "
                              "through other nodes",
    "FlowEntryInitializationError": "fix the entry class's __init__ or the init arguments given to it",
    "TemplateSyntaxError": "fix the Jinja syntax of the node's template (its source.path)",
    "SystemExit": "do not call sys.exit() or exit() in the flow's code ({file}); raise an exception instead",
    "ModuleNotFoundError": "install module {module!r} if it is a package, or check the name of the flow's own "
                           "module (entry: or source.path)",
}
DEFAULT_FIX = "fix the flow (run with -vv to see promptflow's traceback)"


def load_error(exc: BaseException, flow_file: Path, flow_name: str, code_folder: Path | None = None,
               original: Callable[[Path], Path] = lambda path: path) -> SpecError:
    """The one line for ``exc``, raised by promptflow while loading the flow in ``flow_file`` from ``code_folder``
    (the flow folder, or its copy merged with its includes: ``original`` maps the copy's files back)."""
    node = getattr(exc, "_node_name", None)  # promptflow's ResolveToolError keeps it private
    inner = getattr(exc, "inner_exception", None) or exc
    kind = type(inner).__name__
    root = _root_cause(inner)
    frame = _user_frame(root, code_folder or flow_file.parent)
    where = Where(original(Path(frame.path)), frame.line) if frame else node_line(flow_file, node)
    problem = _problem(inner, root)
    details = {"file": where.path, "connection": _quoted(str(inner), "connection") or "?",
               "module": getattr(root, "name", None) or "?"}
    if isinstance(where.path, Path) and where.path.is_relative_to(flow_file.parent):
        details["file"] = where.path.relative_to(flow_file.parent)
    kinds = (type(root).__name__, kind, type(exc).__name__)
    fix = next((FIXES[name] for name in kinds if name in FIXES), DEFAULT_FIX).format(**details)
    site = f"flow {flow_name}, node {node}" if node else f"flow {flow_name}"
    return SpecError(where, f"{site}: {problem}", fix)


def _problem(inner: BaseException, root: BaseException) -> str:
    """What went wrong, in the user's terms: the user's own exception when there is one."""
    if not _is_promptflow(root):
        return f"{type(root).__name__}: {root}"
    message = re.sub(r"\s+", " ", str(getattr(inner, "message", None) or inner)).strip()
    if type(inner).__name__ == "GetConnectionError":  # its message speaks of promptflow's connection provider
        available = re.search(r"Available keys are \[(.*?)\]", message)
        names = available.group(1).replace("'", "") if available else ""
        return (f"no connection {_quoted(message, 'connection')!r} for an input typed as a connection "
                f"(connections here: {names or 'none'})")
    return message


def _is_promptflow(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("promptflow")


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: through promptflow's ``inner_exception`` and Python's ``__cause__``."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nested = getattr(exc, "inner_exception", None) or exc.__cause__
        if not isinstance(nested, BaseException):
            break
        exc = nested
    return exc


def _user_frame(exc: BaseException, folder: Path) -> Where | None:
    """The last line of the flow folder's own code in ``exc``'s traceback, if it went through it."""
    folder = folder.resolve()
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.is_absolute() and path.resolve().is_relative_to(folder):
            found = Where(path, frame.lineno)
    if found is None and isinstance(exc, SyntaxError) and exc.filename:
        path = Path(exc.filename)
        found = Where(path, exc.lineno) if path.is_absolute() and path.resolve().is_relative_to(folder) else None
    return found


def node_line(flow_file: Path, node: str | None) -> Where:
    """The flow file, at the line that names ``node`` when there is one."""
    if node:
        pattern = re.compile(rf"^\s*-?\s*name:\s*['\"]?{re.escape(node)}['\"]?\s*$")
        for number, text in enumerate(flow_file.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.match(text):
                return Where(flow_file, number)
    return Where(flow_file)


def _quoted(message: str, word: str) -> str | None:
    """The first quoted name after ``word`` in a promptflow message (e.g. the connection's name)."""
    match = re.search(rf"{word} '([^']+)'", message, re.IGNORECASE)
    return match.group(1) if match else None


def with_traceback(error: SpecError, show: bool) -> str:
    """The error's line; with ``show`` (-vv, --tb=long) the original exception's traceback below it."""
    cause: Any = error.__cause__
    if not show or cause is None:
        return str(error)
    return str(error) + "\n\n" + "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))


def missing_package(folder: Path, flow_name: str) -> SpecError | None:
    """The first package the flow's ``requirements.txt`` names that is not installed (or not in a version it
    asks for): the likely reason promptflow could not load the flow."""
    file = folder / "requirements.txt"
    if not file.is_file():
        return None
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    for number, text in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        line = text.split("#", 1)[0].strip()
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # blank, an option such as -r / --index-url, or a URL: not ours to judge
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problem = f"package {requirement.name!r} that its requirements.txt names is not installed"
        else:
            if not requirement.specifier or requirement.specifier.contains(version, prereleases=True):
                continue
            problem = f"package {requirement.name} {version} is installed but requirements.txt asks for " \
                      f"{requirement.specifier}"
        return SpecError(Where(file, number), f"flow {flow_name}: {problem}", f"pip install -r {file}")
    return None
