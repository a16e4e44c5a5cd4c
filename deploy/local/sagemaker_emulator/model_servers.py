"""One generation server process (deploy/local/generation_server) per base inference component: started,
awaited on its /ping, told to load and unload adapters, and stopped.

Each server leads its own process group (stopping signals the group: SIGTERM, SIGKILL after the grace),
gets SIGTERM from the kernel if the emulator dies however it dies (PR_SET_PDEATHSIG, set from the launching
thread, which the caller keeps alive for the emulator's lifetime), and watches its parent itself too. Its
output goes line by line to a local file and to CloudWatch Logs.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from deploy.local.generation_server.protocol import ADAPTERS_PATH

from .logstream import JobLog

log = logging.getLogger(__name__)

PING_INTERVAL_S = 0.2
TAIL_LINES = 20
ADMIN_TIMEOUT_S = 120.0  # an adapter load waits for the request running on the generation thread


class ServerFailed(Exception):
    """The server did not come up (or went away); the message ends with the tail of its output."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the thread that started it ends (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ModelServer:
    def __init__(self, name: str, port: int, process: subprocess.Popen[bytes], job_log: JobLog,
                 on_exit: Callable[[ModelServer, int], None]) -> None:
        self.name, self.port, self.process, self._log = name, port, process, job_log
        self._on_exit = on_exit
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.ready = threading.Event()
        self._stopping = threading.Event()
        assert process.stdout is not None
        self._pump = threading.Thread(target=self._follow, args=(process.stdout,), name=f"server-{name}",
                                      daemon=True)
        self._pump.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_stream(self) -> str:
        return self._log.stream

    @property
    def log_group(self) -> str:
        return self._log.group

    def tail(self) -> str:
        return "\n".join(self._tail)

    def wait_ready(self, timeout_s: float, still_wanted: Callable[[], bool]) -> None:
        """Until /ping answers 200; ServerFailed if the process exits, the time runs out, or nobody wants it."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process.poll() is not None:
                    self._pump.join(timeout=5)
                    raise ServerFailed(f"the model server exited with code {self.process.returncode} while "
                                       f"starting. Its last output:\n{self.tail()}")
                if not still_wanted():
                    raise ServerFailed("the inference component was deleted while its model server started")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/ping").status_code == 200:
                        self.ready.set()
                        return
                if time.monotonic() > deadline:
                    raise ServerFailed(f"the model server did not answer /ping within {timeout_s:g} s. Its last "
                                       f"output:\n{self.tail()}")
                time.sleep(PING_INTERVAL_S)

    def load_adapter(self, name: str, path: Path) -> None:
        self._admin("POST", ADAPTERS_PATH, json={"name": name, "path": str(path)})

    def unload_adapter(self, name: str) -> None:
        self._admin("DELETE", f"{ADAPTERS_PATH}/{name}")

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the group, SIGKILL after the grace; returns once the process is gone."""
        self._stopping.set()
        self.ready.clear()
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("model server ignored SIGTERM; killing it", extra={"server": self.name})
        _signal_group(self.process, signal.SIGKILL)  # whatever is left of the group goes too
        self.process.wait()
        self._pump.join(timeout=5)

    def _admin(self, method: str, path: str, **kwargs: Any) -> None:
        try:
            response = httpx.request(method, f"{self.url}{path}", timeout=ADMIN_TIMEOUT_S, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerFailed(f"the model server did not answer {method} {path}: {exc}") from exc
        if response.status_code >= 400:
            raise ServerFailed(f"the model server refused {method} {path} ({response.status_code}): "
                               f"{response.text}")

    def _follow(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._tail.append(line)
                self._log.write(line)
        finally:
            code = self.process.wait()
            self._log.close()
            if not self._stopping.is_set():
                self._on_exit(self, code)


Spawn = Callable[[Callable[[], subprocess.Popen[bytes]]], subprocess.Popen[bytes]]


def start_server(name: str, command: list[str], env: dict[str, str], cwd: Path, work_dir: Path, logs: Any,
                 log_group: str, flush_s: float, spawn: Spawn,
                 on_exit: Callable[[ModelServer, int], None]) -> ModelServer:
    """Start `command --port P` (the model arguments already in `command`); `spawn` runs the Popen on the
    long-lived thread that PR_SET_PDEATHSIG ties the child to."""
    port = free_port()
    argv = [*command, "--port", str(port), "--parent-pid", str(os.getpid())]
    work_dir.mkdir(parents=True, exist_ok=True)
    job_log = JobLog(logs, f"{name}/{int(time.time())}", work_dir / f"{name}.log", flush_s, group=log_group)
    try:
        process = spawn(lambda: subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent))
    except OSError:
        job_log.close()
        raise
    log.info("model server started", extra={"server": name, "port": port, "pid": process.pid})
    return ModelServer(name, port, process, job_log, on_exit)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
