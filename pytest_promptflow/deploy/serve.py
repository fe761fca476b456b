"""One deployment's process: promptflow's own serving app over one packaged flow folder, on 127.0.0.1.

``python -m pytest_promptflow.deploy.serve --flow-dir DIR --port-file FILE`` binds a free port, writes
``{"pid", "port"}`` to FILE once it listens, and answers ``POST /score`` and ``GET /health`` until it is
killed. Connections are resolved once at start, as the suite resolves them (``./.env``, the environment,
else the machine's shared embedded model, under a lease that lapses with this process), and handed to
promptflow as objects, so its connection store is never used. promptflow's home is a folder beside FILE;
telemetry is off (``isolation``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from pytest_promptflow.isolation import HOME_VARIABLE, isolate, promptflow_home
from pytest_promptflow.scrub import scrub_standard_streams

THREADS = 8


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_promptflow.deploy.serve", description=__doc__)
    parser.add_argument("--flow-dir", type=Path, required=True, help="the packaged flow folder")
    parser.add_argument("--port-file", type=Path, required=True, help="where to write {pid, port} once listening")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    scrub_standard_streams()  # the log a deployment leaves holds no known secret either
    args.port_file = args.port_file.resolve()  # the flow folder becomes the working directory
    state = args.port_file.parent
    _promptflow_home(state / "pf-home")
    try:
        app = create_app(args.flow_dir.resolve(), state)
    except Exception as error:  # the last log line says why, for the deployer's error message
        import traceback

        traceback.print_exc()
        print(f"cannot serve {args.flow_dir}: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
        return 1
    from waitress import create_server

    server: Any = create_server(app, host=args.host, port=0, threads=THREADS)
    write_json(args.port_file, {"pid": os.getpid(), "port": int(server.effective_port)})
    server.run()
    return 0


def create_app(folder: Path, state: Path) -> Any:
    """promptflow's flask serving app for the flow in ``folder``, its connections resolved now."""
    from pytest_promptflow.flows import load_promptflow, load_target, resolve_model_configs
    from pytest_promptflow.packaging import INIT_FILE, flow_file

    load_promptflow()
    from promptflow.core._serving.app import create_app as promptflow_app

    path = flow_file(folder)
    target = load_target(path, folder)
    init = None
    if target.kind == "flex" and (folder / INIT_FILE).is_file():
        init = json.loads((folder / INIT_FILE).read_text(encoding="utf-8"))
    embedded = _embedded()
    connections = [_connection(name, kind, embedded) for name, kind in target.connections(init).items()]
    _prompty_connections({connection.name: connection for connection in connections})
    os.environ["PROMPTFLOW_PROJECT_PATH"] = str(folder)  # promptflow's serving reads its flow folder from here
    os.chdir(folder)  # a flow opens files relative to its folder, as under pf flow serve and in the image (cd /flow)
    by_name = {connection.name: connection for connection in connections}  # model configurations: ours, not pf's store
    return promptflow_app(engine="flask", flow_file_path=path, connection_provider=lambda: connections,
                          init=resolve_model_configs(init, by_name))


def _connection(name: str, kind: str, embedded: Callable[[], str]) -> Any:
    from pytest_promptflow.llm.connections import resolve_connection

    resolved = resolve_connection(name, kind, declared={}, project_dir=Path.cwd(), environ=os.environ,
                                  embedded=embedded)
    if resolved.embedded:
        print(f"connection {name!r} has no credentials in ./.env or the environment: {resolved.source} answers",
              file=sys.stderr)
    connection = resolved.connection
    connection.name = name
    # promptflow 1.18's serving calls a public twin of this method that its connection classes lack
    connection.to_execution_connection_dict = connection._to_execution_connection_dict
    return connection


def _prompty_connections(connections: dict[str, Any]) -> None:
    """A prompty's named connection from ``connections``: promptflow's serving would look the name up in its
    connection store, which this process never fills (secrets stay in memory)."""
    from promptflow.core import _prompty_utils

    store_lookup = _prompty_utils.get_connection_by_name

    def lookup(name: str) -> tuple[dict[str, Any], str]:
        if name not in connections:
            return store_lookup(name)  # type: ignore[no-any-return]
        return connections[name]._to_execution_connection_dict()["value"], connections[name].TYPE

    _prompty_utils.get_connection_by_name = lookup


def _embedded() -> Callable[[], str]:
    """The address of the machine's shared embedded model, found or started on first call under this process's
    lease (it lapses when this process ends)."""
    started: list[Any] = []

    def address() -> str:
        if not started:
            from pytest_promptflow.llm.embedded import EmbeddedModel

            started.append(EmbeddedModel(owner_pid=os.getpid()))
        return str(started[0].address())

    return address


def _promptflow_home(home: Path) -> None:
    """promptflow's home in this deployment's state folder, telemetry off, quiet logs (before importing it)."""
    home.mkdir(parents=True, exist_ok=True)
    os.environ[HOME_VARIABLE] = str(promptflow_home(home))
    isolate()


def write_json(path: Path, record: Any) -> None:
    """Writes ``record`` to ``path`` atomically: readers see the old file or the whole new one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        json.dump(record, file, indent=1)
    os.replace(file.name, path)


def _one_line(error: BaseException, limit: int = 500) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."


if __name__ == "__main__":
    sys.exit(main())
