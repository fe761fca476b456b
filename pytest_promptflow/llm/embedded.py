"""The machine's embedded model server: one per user, shared by every pytest session, xdist worker and local
deployment, stopped when the last of them goes.

Its users meet in a per-user runtime folder (see ``runtime_dir``; never the home folder): a file lock decides
who starts the server, a JSON record says where it is, and each user holds a lease, a file named by its pid.
The server exits once no lease names a live process, so a user that dies without releasing (kill -9) keeps
nothing alive; a server that died is started again by the next user that asks.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from ..extras import require_embedded_model

SERVER_MODULE = "pytest_promptflow.llm.local_server"
#: ``python -m`` this module ``--owner-pid PID``: the shared model's address under PID's lease, for a process
#: that cannot import this package (a workflow server runs in another environment)
LEASE_MODULE = "pytest_promptflow.llm.embedded"
RECORD_FILE = "model.json"
LOCK_FILE = "model.lock"
LOG_FILE = "model.log"
LEASES = "leases"
#: a folder of one's own for the shared model (tests, or users who want their suites apart)
RUNTIME_VARIABLE = "PYTEST_PROMPTFLOW_RUNTIME_DIR"

# Talk to 127.0.0.1 directly, whatever HTTP_PROXY says.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def runtime_dir() -> Path:
    """This user's folder for the shared model: ``$PYTEST_PROMPTFLOW_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/pytest-promptflow``, else ``<temp>/pytest-promptflow-<uid>`` (created 0700 when used)."""
    if os.environ.get(RUNTIME_VARIABLE):
        return Path(os.environ[RUNTIME_VARIABLE])
    if os.environ.get("XDG_RUNTIME_DIR") and os.path.isdir(os.environ["XDG_RUNTIME_DIR"]):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "pytest-promptflow"
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"pytest-promptflow-{user}"


def _own_folder(folder: Path) -> None:
    """Creates ``folder`` private to this user; one that another user owns is refused (a shared temp folder)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
        raise RuntimeError(f"{folder} belongs to another user; set {RUNTIME_VARIABLE} to a folder of yours")
    (folder / LEASES).mkdir(mode=0o700, exist_ok=True)


class EmbeddedModel:
    """The shared model server as one user sees it: found or started on demand, under a lease of ``owner_pid``
    (an xdist session's workers all hold their controller's)."""

    def __init__(
        self,
        shared_dir: Path | None = None,
        owner_pid: int | None = None,
        *,
        parallel: int = 4,
        start_timeout: float = 60.0,
    ) -> None:
        self.shared_dir = Path(shared_dir) if shared_dir is not None else runtime_dir()
        self.owner_pid = owner_pid or os.getpid()
        self.parallel = parallel
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None  # set only if this object started it
        self._known: dict[str, Any] | None = None  # the record this object last checked

    @property
    def record_path(self) -> Path:
        return self.shared_dir / RECORD_FILE

    @property
    def log_path(self) -> Path:
        return self.shared_dir / LOG_FILE

    @property
    def lease_path(self) -> Path:
        return self.shared_dir / LEASES / str(self.owner_pid)

    @property
    def started(self) -> bool:
        """Whether a live server is recorded (started by this object or any other user)."""
        record = self._read_record()
        return record is not None and self._alive(record["pid"])

    def address(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:PORT``, under this user's lease; starts it if none
        answers."""
        record = self._read_record()
        if record is not None and record == self._known and self._alive(record["pid"]):
            return str(record["address"])
        _own_folder(self.shared_dir)
        with self._lock(self.start_timeout + 30):
            _write_lease(self.lease_path, self.owner_pid)
            record = self._read_record()
            if record is None or not self._alive(record["pid"]) or not _healthy(record["address"]):
                if record is not None:  # dead or deaf: replace it
                    self._terminate(record["pid"])
                    self.record_path.unlink(missing_ok=True)
                record = self._start()
                self._write_record(record)
            self._known = record
            return str(record["address"])

    def release(self) -> None:
        """Gives up this user's lease; the last user's release stops the server (the server would notice
        within half a second anyway). Does nothing without a lease."""
        if not self.lease_path.exists():
            return
        with self._lock(30):
            self.lease_path.unlink(missing_ok=True)
            if not live_leases(self.shared_dir):
                self._stop_recorded()

    def stop(self) -> None:
        """Terminates the recorded server whoever uses it, and forgets it and its leases (``stop --all``)."""
        if not self.shared_dir.is_dir():
            return
        with self._lock(30):
            self._stop_recorded()
            for lease in (self.shared_dir / LEASES).glob("*"):
                lease.unlink(missing_ok=True)
        for pid in servers_of(self.shared_dir):  # one whose record was lost (a start that was killed)
            self._terminate(pid)

    def _stop_recorded(self) -> None:
        record = self._read_record()
        if record is not None:
            self._terminate(record["pid"])
            self.record_path.unlink(missing_ok=True)
        self._process = self._known = None

    def _lock(self, timeout: float) -> FileLock:
        return FileLock(str(self.shared_dir / LOCK_FILE), timeout=timeout)

    # -- starting -------------------------------------------------------------------------

    def _start(self) -> dict[str, Any]:
        require_embedded_model()  # without xllamacpp or the GGUF, one line with the command, not a dead server
        command = [
            sys.executable, "-m", SERVER_MODULE,
            "--leases", str(self.shared_dir),
            "--port", "0",
            "--parallel", str(self.parallel),
        ]
        env = dict(os.environ)
        # The server must import this package even when it is not installed (a source checkout).
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        try:
            record = self._read_ready_line(process)
        except BaseException:
            _kill(process)
            raise
        finally:
            assert process.stdout is not None
            process.stdout.close()  # the server prints nothing after its ready line
        self._process = process
        return {"address": record["address"], "pid": process.pid}

    def _read_ready_line(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        """Wait for the server's ``{"address": ..., "pid": ...}`` line on its stdout."""
        assert process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(self._failure(f"did not start within {self.start_timeout:g} s"))
                if not selector.select(timeout=min(remaining, 0.5)):
                    if process.poll() is not None:
                        raise RuntimeError(self._failure(f"exited with code {process.returncode}"))
                    continue
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    code = process.wait(timeout=5)
                    raise RuntimeError(self._failure(f"exited with code {code} before it was ready"))
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue  # not ours: something in the server printed to stdout
                    if isinstance(message, dict) and "address" in message:
                        return message

    def _failure(self, what: str) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            lines = []
        tail = "\n".join(lines) or "(empty)"
        return f"the embedded model server {what}; last lines of {self.log_path}:\n{tail}"

    # -- the record -----------------------------------------------------------------------

    def _read_record(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(record, dict) and isinstance(record.get("pid"), int) and "address" in record:
            return record
        return None

    def _write_record(self, record: dict[str, Any]) -> None:
        temporary = self.record_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        os.replace(temporary, self.record_path)

    # -- processes ------------------------------------------------------------------------

    def _alive(self, pid: int) -> bool:
        """Whether ``pid`` is a running server (not a zombie, not an unrelated reused pid)."""
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None and pid_alive(pid)
        return pid_alive(pid) and _is_server(pid)

    def _terminate(self, pid: int) -> None:
        """SIGTERM, wait, SIGKILL: only a process that is our server, never a reused pid."""
        if self._process is not None and self._process.pid == pid:
            _kill(self._process)
            return
        if not self._alive(pid):
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not pid_alive(pid):
                    return
                time.sleep(0.05)


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _healthy(address: str, patience: float = 10.0) -> bool:
    """Whether the server answers /health; a busy machine gets ``patience`` seconds to reply."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with _direct.open(f"{address}/health", timeout=2) as response:
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return False
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # reaped since the signal, or no /proc to ask
        return not Path("/proc/self/stat").exists()
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_server(pid: int) -> bool:
    """Whether ``pid`` runs our server module (where /proc can tell; trusted otherwise)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return SERVER_MODULE.encode() in cmdline


# -- leases -------------------------------------------------------------------------------


def _write_lease(path: Path, pid: int) -> None:
    """A lease: the holder's pid (its name) and its start time, so a reused pid holds nothing."""
    path.write_text(_start_time(pid))


def live_leases(folder: Path) -> list[int]:
    """The pids whose leases are live; a dead holder's lease is removed on the way."""
    live = []
    for lease in (Path(folder) / LEASES).glob("*"):
        try:
            pid, started = int(lease.name), lease.read_text()
        except (ValueError, OSError):
            continue
        if pid_alive(pid) and started == _start_time(pid):
            live.append(pid)
        else:
            lease.unlink(missing_ok=True)
    return live


def serve_while_leased(folder: Path, poll: float = 0.5) -> None:
    """In the server: returns once no live lease is left, its record removed under the lock first, so no user
    is handed a server that is exiting."""
    while True:
        time.sleep(poll)
        if live_leases(folder):
            continue
        with FileLock(str(Path(folder) / LOCK_FILE), timeout=-1):
            if live_leases(folder):
                continue
            record = Path(folder) / RECORD_FILE
            try:
                ours = json.loads(record.read_text()).get("pid") == os.getpid()
            except (OSError, ValueError, AttributeError):
                ours = False
            if ours:
                record.unlink(missing_ok=True)
            return


def servers_of(folder: Path) -> Iterator[int]:
    """Live server processes of this user started for ``folder`` (Linux /proc; elsewhere none is found)."""
    wanted = [SERVER_MODULE, "--leases", str(folder)]
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            arguments = os.fsdecode(entry.joinpath("cmdline").read_bytes()).split("\0")
        except OSError:
            continue
        if all(part in arguments for part in wanted) and pid_alive(int(entry.name)):
            yield int(entry.name)


def _start_time(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot (/proc); "" where that cannot be told."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return ""


def main(argv: list[str] | None = None) -> int:
    """Prints ``{"address": ...}`` of the shared model, leased to ``--owner-pid``, and exits."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--owner-pid", type=int, required=True)
    address = EmbeddedModel(owner_pid=parser.parse_args(argv).owner_pid).address()
    print(json.dumps({"address": address}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
