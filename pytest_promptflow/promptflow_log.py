"""promptflow's own log lines (a failed row's ERROR and traceback, INFO if the user asks for it) go to a file, not
to the terminal or pytest's captured output: a failing item shows its threshold table and names the file.

promptflow writes them through StreamHandlers on stdout and stderr, attached to loggers kept in its private
``promptflow._utils.logger_utils``: its execution loggers are ``logging.Logger(name)`` objects outside logging's
registry (so pytest's log capture never sees them), and ``LoggerFactory._existing_loggers`` holds the others
(``promptflow.*``, ``flowinvoker``). Each promptflow module makes its logger when first imported, so the loggers
are moved again every time a flow starts (``reroute``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .scrub import scrub_text

FILE_NAME = "promptflow.log"
FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
#: promptflow adds a DEBUG stream handler to this azure-core logger every time it makes a logger
AZURE_POLICY_LOGGER = "azure.core.pipeline.policies._universal"


class _Scrubbed(logging.Formatter):
    """promptflow's formatter scrubs the credentials it knows of; this one scrubs the secrets we know of."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))


class LogFile(logging.FileHandler):
    """Appends to the session's log file, made (with its folder) on the first record: a session whose flows
    log nothing leaves no file. xdist workers append to the same file."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=True)
        self.setFormatter(_Scrubbed(FORMAT))

    def _open(self):  # type: ignore[no-untyped-def]  # logging's own signature
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


#: the log files of the sessions in this process, the innermost last (pytester runs a session inside a session)
_handlers: list[LogFile] = []


def log_path(report_folder: Path | None) -> Path:
    """The report folder's ``promptflow.log``, else one in this user's private temp folder."""
    from .isolation import private_home

    return (report_folder if report_folder is not None else private_home()) / FILE_NAME


def start(path: Path, fresh: bool) -> None:
    """promptflow logs to ``path`` from now on (in this process); ``fresh``: the session's owner empties it, so
    the file holds this session's lines only."""
    if fresh:
        path.unlink(missing_ok=True)
    _handlers.append(LogFile(path))
    reroute()


def stop() -> None:
    """The session's log file is closed; promptflow logs to the enclosing session's file, if there is one."""
    if not _handlers:
        return
    handler = _handlers.pop()
    for logger in _promptflow_loggers():
        logger.removeHandler(handler)
    handler.close()
    reroute()


def written() -> Path | None:
    """The log file, once promptflow wrote to it in this session."""
    if not _handlers:
        return None
    handler = _handlers[-1]
    path = Path(handler.baseFilename)
    return path if path.is_file() and path.stat().st_size else None


def record(name: str, message: str, level: int = logging.INFO) -> None:
    """A line from another process (a workflow worker's stderr: the workflow's prints and warnings) into the
    session's log file, beside promptflow's."""
    if _handlers:
        _handlers[-1].handle(logging.LogRecord(name, level, "", 0, message, None, None))


def reroute() -> None:
    """Every promptflow logger writes to the log file instead of stdout or stderr (nothing before promptflow
    is imported: the plugin never imports it itself)."""
    if not _handlers:
        return
    handler = _handlers[-1]
    for logger in _promptflow_loggers():
        for other in [h for h in logger.handlers if type(h) is logging.StreamHandler or isinstance(h, LogFile)]:
            if other is not handler:
                logger.removeHandler(other)
        if handler not in logger.handlers:
            logger.addHandler(handler)  # a FileHandler: LoggerFactory adds no stream handler beside it


def _promptflow_loggers() -> list[logging.Logger]:
    """promptflow's loggers, from its private ``logger_utils`` (empty while promptflow is not imported)."""
    module = sys.modules.get("promptflow._utils.logger_utils")
    if module is None:
        return []
    execution = [module.logger, module.flow_logger, module.bulk_logger, module.service_logger]
    made = list(module.LoggerFactory._existing_loggers)
    return list(dict.fromkeys([*execution, *made, logging.getLogger(AZURE_POLICY_LOGGER)]))
