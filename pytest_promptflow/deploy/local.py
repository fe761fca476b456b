"""The local target: each deployment is promptflow's serving app in its own process on 127.0.0.1, and each
endpoint a router in front of them that splits traffic; both outlive the pytest run that started them.

State lives in ``<state_dir>/<endpoint>/endpoint.json`` (router, traffic, deployments with pid and port),
replaced whole on every change, which is how the router learns of a new split. A deployment is recorded
(``"status": "starting"``) before its process starts and its pid as soon as it has one, so a deploy killed
half-way leaves a record: the next deploy or stop of the endpoint ends what it left (checked by command
line, never a reused pid) and deletes its half-written folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock

from pytest_promptflow.deploy.base import PIN_HEADER, DeployError, Deployment, DeploymentSpec
from pytest_promptflow.deploy.processes import runs, strays
from pytest_promptflow.deploy.serve import write_json
from pytest_promptflow.errors import SpecError
from pytest_promptflow.extras import require
from pytest_promptflow.llm.connections import EMBEDDED_API_KEY
from pytest_promptflow.llm.embedded import LEASE_MODULE, pid_alive
from pytest_promptflow.llm.sdk_environment import FAMILIES, unconfigured
from pytest_promptflow.packaging import is_workflow

STATE_FILE = "endpoint.json"
SERVE = "pytest_promptflow.deploy.serve"
ROUTER = "pytest_promptflow.deploy.router"
#: A packaged agent-framework workflow's server, run as a script by the second environment's python.
SERVE_WORKFLOW = str(Path(__file__).resolve().parents[1] / "workflows" / "serve.py")
REQUEST_TIMEOUT = 300.0
PROBE_TIMEOUT = 5.0  # a deployment that does not answer /health within this is not serving
#: What answers once a process is up: the router's /health also judges its deployments, /stats does not.
READY = {SERVE: "/health", SERVE_WORKFLOW: "/health", ROUTER: "/stats"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, whatever HTTP_PROXY says
#: Processes this Python process started, kept so that stopping one reaps it (no zombie left behind).
_children: dict[int, subprocess.Popen[bytes]] = {}


class LocalTarget:
    """Deploys packaged flows as local processes; ``state_dir`` holds every endpoint's state and logs."""

    name = "local"
    live = True

    def __init__(self, state_dir: Path, start_timeout: float = 120.0,
                 workflow_python: Callable[[str], Path] | None = None) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.start_timeout = start_timeout
        self.workflow_python = workflow_python  # the second environment's python, asked for only to serve a workflow

    def endpoints(self) -> list[str]:
        return sorted(path.parent.name for path in self.state_dir.glob(f"*/{STATE_FILE}"))

    def router_url(self, endpoint: str) -> str:
        router = self._read(endpoint)["router"]
        if not self._router_up(endpoint, router):
            raise DeployError(f"endpoint {endpoint!r} has no running router in {self.state_dir}")
        return f"http://127.0.0.1:{router['port']}"

    def stats(self, endpoint: str) -> dict[str, Any]:
        """What the router counted since it started: traffic, and requests, errors, latency per deployment."""
        return dict(_request(f"{self.router_url(endpoint)}/stats"))

    def deployments(self, endpoint: str) -> dict[str, Deployment]:
        """Each deployment with its URL only if it answers now: it answers /health (``PROBE_TIMEOUT``) and its
        endpoint's router runs; else why not."""
        state = self._read(endpoint)
        router_up = self._router_up(endpoint, state["router"])
        found = {}
        for name, entry in state["deployments"].items():
            url, detail = _probe(entry)
            if url and not router_up:
                url, detail = "", f"{detail}, but the endpoint's router is not running"
            found[name] = Deployment(endpoint, name, entry["model"], url=url, detail=detail)
        return found

    def traffic(self, endpoint: str) -> dict[str, int]:
        return dict(self._read(endpoint)["traffic"])

    def deploy(self, spec: DeploymentSpec) -> Deployment:
        endpoint, name = _checked(spec.endpoint), _checked(spec.deployment)
        folder = self.state_dir / endpoint / name
        log = folder.with_suffix(".log")
        with self._locked():
            state = self._read(endpoint)
            self._sweep(endpoint, state)
            if name in state["deployments"]:
                self._drop(state, name)
            server = SERVE_WORKFLOW if is_workflow(spec.folder) else SERVE
            entry: dict[str, Any] = {"status": "starting", "pid": None, "port": None, "model": dict(spec.model),
                                     "folder": str(folder / "flow"), "log": str(log), "server": server}
            state["deployments"][name], state["traffic"][name] = entry, 0
            self._write(endpoint, state)  # before the process starts: a killed deploy leaves this to sweep
            router_started = False
            try:
                shutil.copytree(spec.folder, folder / "flow")
                command, env = self._server(server, spec)
                entry.update(self._start(command, ["--flow-dir", entry["folder"]], folder / "port.json", log,
                                         spec.project_dir, env, self._recorder(endpoint, state, entry)))
                if not self._router_up(endpoint, state["router"]):
                    router_started = True
                    state["router"] = {"pid": None, "port": None}
                    state["router"].update(self._start(
                        [sys.executable, "-m", ROUTER], ["--state", str(self._path(endpoint))],
                        self.state_dir / endpoint / "router.json",
                        self.state_dir / endpoint / "router.log", self.state_dir, _environment({}),
                        self._recorder(endpoint, state, state["router"])))
            except BaseException as error:
                self._abandon(endpoint, state, name, router_started)
                if isinstance(error, (DeployError, OSError)):
                    raise DeployError(f"deployment {name!r} of endpoint {endpoint!r}: {error}") from None
                raise
            entry.update(status="ready", started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            self._write(endpoint, state)
        return self.deployments(endpoint)[name]

    def invoke(self, endpoint: str, deployment: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """Sent through the endpoint's router, pinned to ``deployment``, as a client would; a prompty's text
        answer is ``{"output": text}``, as the suite records it."""
        answer = _request(f"{self.router_url(endpoint)}/score", inputs, {PIN_HEADER: deployment})
        return answer if isinstance(answer, dict) else {"output": answer}

    def set_traffic(self, endpoint: str, split: Mapping[str, int]) -> None:
        with self._locked():
            state = self._read(endpoint)
            unknown = sorted(set(split) - set(state["deployments"]))
            if unknown:
                raise DeployError(f"endpoint {endpoint!r} has no deployment {', '.join(unknown)}; "
                                  f"it has: {', '.join(state['deployments']) or 'none'}")
            shares = list(split.values())
            if any(type(share) is not int or not 0 <= share <= 100 for share in shares) or sum(shares) != 100:
                raise DeployError(f"traffic {dict(split)} is not whole percents 0..100 summing to 100")
            state["traffic"] = {name: int(split.get(name, 0)) for name in state["deployments"]}
            self._write(endpoint, state)

    def remove(self, endpoint: str, deployment: str) -> None:
        with self._locked():
            state = self._read(endpoint)
            if deployment in state["deployments"]:
                self._drop(state, deployment)
            if state["deployments"]:
                self._write(endpoint, state)
            else:
                self._close(endpoint, state)

    def stop(self, endpoint: str) -> None:
        """Removes every deployment of ``endpoint`` and its router, and what a killed deploy left; nothing if
        it is gone."""
        with self._locked():
            state = self._read(endpoint)
            self._sweep(endpoint, state)
            for name in list(state["deployments"]):
                self._drop(state, name)
            self._close(endpoint, state)

    def problems(self, endpoint: str) -> list[str]:
        """What differs from how a finished release leaves ``endpoint``, one line each (none: consistent): a
        deployment that does not answer, no router, a split not summing to 100, a server or folder no
        record names (a deploy killed half-way)."""
        state = self._read(endpoint)
        found = [f"deployment {name}: {d.detail}" for name, d in self.deployments(endpoint).items() if not d.url]
        if not self._router_up(endpoint, state["router"]):
            found.append(f"router not running: {state['router']}")
        if sum(state["traffic"].values()) != 100:
            found.append(f"traffic {state['traffic']} does not sum to 100")
        found += [f"process {pid} is a server of this endpoint that no record names"
                  for pid in self._strays(endpoint, state)]
        found += [f"folder {folder} belongs to no deployment" for folder in self._unknown_folders(endpoint, state)]
        return found

    # -- state and processes --------------------------------------------------------------

    def _path(self, endpoint: str) -> Path:
        return self.state_dir / _checked(endpoint) / STATE_FILE

    def _read(self, endpoint: str) -> dict[str, Any]:
        try:
            state = json.loads(self._path(endpoint).read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = {}
        except (OSError, ValueError) as error:
            raise DeployError(f"{self._path(endpoint)} is unreadable ({error}); stop the endpoint") from None
        return {"router": state.get("router"), "traffic": state.get("traffic") or {},
                "deployments": state.get("deployments") or {}}

    def _write(self, endpoint: str, state: dict[str, Any]) -> None:
        self._path(endpoint).parent.mkdir(parents=True, exist_ok=True)
        write_json(self._path(endpoint), state)

    def _locked(self) -> AbstractContextManager[Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.state_dir / "deploy.lock"), timeout=self.start_timeout * 2 + 60)

    def _drop(self, state: dict[str, Any], name: str, keep_log: bool = False) -> None:
        """Stops deployment ``name`` and deletes its files and entry (the caller writes the state)."""
        entry = state["deployments"].pop(name)
        state["traffic"].pop(name, None)
        _stop(entry["pid"], entry.get("server", SERVE), entry["folder"])
        shutil.rmtree(Path(entry["folder"]).parent, ignore_errors=True)
        if not keep_log:
            Path(entry["log"]).unlink(missing_ok=True)

    def _abandon(self, endpoint: str, state: dict[str, Any], name: str, router_started: bool) -> None:
        """Undoes a failed deploy: stops what it started and deletes its files, but keeps its log."""
        self._drop(state, name, keep_log=True)
        if state["router"] and (router_started or not state["deployments"]):  # no router for nothing to serve
            _stop(state["router"]["pid"], ROUTER, str(self._path(endpoint)))
            state["router"] = None
        if state["deployments"]:
            self._write(endpoint, state)
        else:
            self._path(endpoint).unlink(missing_ok=True)

    def _sweep(self, endpoint: str, state: dict[str, Any]) -> None:
        """Ends what deploys killed half-way left (under the lock, a "starting" entry is such a leftover):
        their recorded processes, processes they started before recording them, and their folders; the
        caller writes the state."""
        for name, entry in list(state["deployments"].items()):
            if entry.get("status") == "starting":
                self._drop(state, name)
        router = state["router"]
        if router and not router.get("port"):
            _stop(router["pid"], ROUTER, str(self._path(endpoint)))
            state["router"] = None
        for pid in self._strays(endpoint, state):
            _kill_group(pid)
        for folder in self._unknown_folders(endpoint, state):
            shutil.rmtree(folder, ignore_errors=True)

    def _strays(self, endpoint: str, state: Mapping[str, Any]) -> list[int]:
        """Servers and routers of ``endpoint`` (by command line) whose pid the state does not record."""
        entries = [*state["deployments"].values(), state["router"] or {}]
        known = {e["pid"] for e in entries if e.get("pid")}
        return list(strays((SERVE, SERVE_WORKFLOW, ROUTER), self.state_dir / endpoint, known))

    def _unknown_folders(self, endpoint: str, state: Mapping[str, Any]) -> list[Path]:
        """Folders under ``endpoint`` that are no recorded deployment's (half-written by a killed deploy)."""
        kept = {Path(entry["folder"]).parent for entry in state["deployments"].values()}
        return [path for path in sorted((self.state_dir / endpoint).glob("*")) if path.is_dir() and path not in kept]

    def _recorder(self, endpoint: str, state: dict[str, Any], entry: dict[str, Any]) -> Callable[[int], None]:
        """Records a process's pid in ``entry`` and the state file the moment it exists."""

        def record(pid: int) -> None:
            entry["pid"] = pid
            self._write(endpoint, state)

        return record

    def _router_up(self, endpoint: str, router: Mapping[str, Any] | None) -> bool:
        return bool(router and router.get("port") and _running(router["pid"], ROUTER, str(self._path(endpoint))))

    def _close(self, endpoint: str, state: dict[str, Any]) -> None:
        if state["router"]:
            _stop(state["router"]["pid"], ROUTER, str(self._path(endpoint)))
        shutil.rmtree(self.state_dir / endpoint, ignore_errors=True)

    def _server(self, server: str, spec: DeploymentSpec) -> tuple[list[str], dict[str, str]]:
        """The command and environment of ``server``: promptflow's app, or a workflow's server in the second
        environment (its LLM calls to the model the environment names, else an embedded one)."""
        if server == SERVE:
            try:
                require("deploy", "the local target")  # promptflow's serving app on waitress, in this environment
            except SpecError as missing:
                raise DeployError(str(missing)) from None
            return [sys.executable, "-m", SERVE], _environment(spec.settings.environment_variables)
        if self.workflow_python is None:
            raise DeployError("this local target serves no agent-framework workflow (no second environment given)")
        try:
            python = self.workflow_python(spec.flow)
        except SpecError as error:
            raise DeployError(str(error)) from None
        return [str(python), SERVE_WORKFLOW], _workflow_environment(spec.settings.environment_variables)

    def _start(self, command: list[str], args: list[str], port_file: Path, log: Path, cwd: Path,
               env: dict[str, str], spawned: Callable[[int], None]) -> dict[str, Any]:
        """Starts ``command`` detached, tells ``spawned`` its pid, and waits until it answers; its {pid, port}."""
        server = command[-1]
        port_file.parent.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen([*command, *args, "--port-file", str(port_file)],
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       cwd=cwd, env=env, start_new_session=True)
        _children[process.pid] = process
        spawned(process.pid)
        what = "the router" if server == ROUTER else "the flow server"
        deadline = time.monotonic() + self.start_timeout
        while process.poll() is None:
            try:
                port = int(json.loads(port_file.read_text(encoding="utf-8"))["port"])
                _request(f"http://127.0.0.1:{port}{READY[server]}", timeout=2)
                return {"pid": process.pid, "port": port}
            except (OSError, ValueError, KeyError, DeployError):
                if time.monotonic() > deadline:
                    raise DeployError(_failure(f"{what} was not ready within {self.start_timeout:g} s", log)) from None
                time.sleep(0.1)
        raise DeployError(_failure(f"{what} exited with code {process.returncode}", log))


def _request(url: str, body: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
             timeout: float = REQUEST_TIMEOUT) -> Any:
    """GET ``url`` (POST ``body`` as JSON if given): the JSON answered; DeployError for anything else."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with _direct.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise DeployError(f"HTTP {error.code}: {error.read()[:300].decode(errors='replace').strip()}") from None
    except ValueError as error:
        raise DeployError(f"{url} answered no JSON ({error})") from None
    except OSError as error:
        raise DeployError(f"{url} did not answer ({getattr(error, 'reason', error)})") from None


def _probe(entry: Mapping[str, Any]) -> tuple[str, str]:
    """(its /score URL if it answers /health now, else ""; one line saying where it runs, or why it does not)."""
    pid, log = entry["pid"], entry["log"]
    if entry.get("status") == "starting":
        return "", f"starting, or left by a deploy that was killed (pid {pid}; log {log})"
    if not _running(pid, entry.get("server", SERVE), entry["folder"]):
        return "", f"not running (was pid {pid}; log {log})"
    where = f"pid {pid} on 127.0.0.1:{entry['port']}"
    try:
        _request(f"http://127.0.0.1:{entry['port']}/health", timeout=PROBE_TIMEOUT)
    except DeployError as error:
        return "", f"not answering ({where}: {error}; log {log})"
    return f"http://127.0.0.1:{entry['port']}/score", where


def _running(pid: int | None, module: str, path: str) -> bool:
    """Whether ``pid`` runs ``module`` with ``path`` (pids are reused: never signal one that does not)."""
    process = _children.get(pid or 0)
    if process is not None and process.poll() is not None:  # reaps our own
        del _children[process.pid]
        return False
    return runs(pid, module, path)


def _stop(pid: int | None, module: str, path: str) -> None:
    """SIGTERM to the process group of ``pid`` (started in its own session), SIGKILL if it lingers; only if
    it is ours (a live process keeps its pid, so it stays ours while it lingers)."""
    if not _running(pid, module, path):
        return
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if not pid_alive(pid):
            break
    process = _children.pop(pid, None)
    if process is not None:
        process.wait(5)


def _kill_group(pid: int) -> None:
    """SIGKILL to a stray server's process group (each was started in its own session), waiting till it is gone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.05)


def _environment(extra: Mapping[str, Any]) -> dict[str, str]:
    """This process's environment plus ``extra``; the package importable even from a source checkout."""
    env = {**os.environ, **{key: str(value) for key, value in extra.items()}}
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _workflow_environment(extra: Mapping[str, Any]) -> dict[str, str]:
    """A workflow server's environment: this one plus ``extra``, without this package's path (its python is
    another environment's). Without an OpenAI model configured, the machine's shared embedded one, asked for by
    the server at its first request (workflows/serve.py) under a lease of its pid, as a promptflow deployment's."""
    env = {**os.environ, **{key: str(value) for key, value in extra.items()}}
    openai = next(family for family in FAMILIES if family.connection == "env:OPENAI")
    for name, value in openai.fallback.items():  # a running session's stand-ins reach no model from here
        if env.get(name) == value:
            del env[name]
    if openai in unconfigured(env):
        package_root = str(Path(__file__).resolve().parents[2])
        env["OPENAI_API_KEY"] = EMBEDDED_API_KEY
        env["PYTEST_PROMPTFLOW_MODEL"] = json.dumps({"command": [sys.executable, "-m", LEASE_MODULE],
                                                     "env": {"PYTHONPATH": package_root}})
    return env


def _checked(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise DeployError(f"{name!r} is not a valid endpoint or deployment name (letters, digits, '-', '_', '.')")
    return name


def _failure(what: str, log: Path) -> str:
    """One line: what happened, the log's last line (serve.py ends with ``cannot serve DIR: why``), the log."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"{what}: {lines[-1] if lines else '(empty log)'} (log: {log})"
