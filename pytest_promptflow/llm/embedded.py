"""The session's embedded model server: started at most once, shared by all xdist workers.

Workers coordinate through a directory they share with the controller: a file lock decides who
starts the server, a JSON record tells the others where it is. The server watches the
controller's pid and exits on its own if the session dies without calling :meth:`stop`.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..extras import require_embedded_model

SERVER_MODULE = "pytest_promptflow.llm.local_server"
RECORD_FILE = "model.json"
LOCK_FILE = "model.lock"
LOG_FILE = "model.log"

# Talk to 127.0.0.1 directly, whatever HTTP_PROXY says.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmbeddedModel:
    """The local model server of one pytest session, found or started on demand."""

    def __init__(
        self,
        shared_dir: Path,
        owner_pid: int,
        *,
        parallel: int = 4,
        start_timeout: float = 60.0,
    ) -> None:
        self.shared_dir = Path(shared_dir)
        self.owner_pid = owner_pid
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
    def started(self) -> bool:
        """Whether a live server is recorded for this session (by this object or another)."""
        record = self._read_record()
        return record is not None and self._alive(record["pid"])

    def address(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:PORT``; starts it if none answers."""
        record = self._read_record()
        if record is not None and record == self._known and self._alive(record["pid"]):
            return str(record["address"])
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.shared_dir / LOCK_FILE), timeout=self.start_timeout + 30):
            record = self._read_record()
            if record is None or not self._alive(record["pid"]) or not _healthy(record["address"]):
                if record is not None:  # dead or deaf: replace it
                    self._terminate(record["pid"])
                    self.record_path.unlink(missing_ok=True)
                record = self._start()
                self._write_record(record)
            self._known = record
            return str(record["address"])

    def stop(self) -> None:
        """Terminate the recorded server and forget it; does nothing if none was started."""
        if not self.shared_dir.is_dir():
            return
        with FileLock(str(self.shared_dir / LOCK_FILE), timeout=30):
            record = self._read_record()
            if record is not None:
                self._terminate(record["pid"])
                self.record_path.unlink(missing_ok=True)
            self._process = self._known = None

    # -- starting -------------------------------------------------------------------------

    def _start(self) -> dict[str, Any]:
        require_embedded_model()  # without xllamacpp or the GGUF, one line with the command, not a dead server
        command = [
            sys.executable, "-m", SERVER_MODULE,
            "--owner-pid", str(self.owner_pid),
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
        return {"address": record["address"], "pid": process.pid, "owner_pid": self.owner_pid}

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
