"""The instances of one training job: `ResourceConfig.InstanceCount` hosts named algo-1, algo-2, ... as SageMaker
names them, each a container of its own here: its own /opt/ml (channels downloaded into each, as
S3DataDistributionType FullyReplicated does), its own checkpoint folder synced to the one CheckpointConfig.S3Uri,
its own log stream (`{job}/algo-N-{start}`), and its own process group running the entry point.

What a host process is told, as SageMaker tells it: SM_CURRENT_HOST and SM_HOSTS, and resourceconfig.json with
`current_host` and `hosts`. What SageMaker does not need to tell (its hosts resolve each other by name on the job's
network) the emulator adds, because algo-N names resolve to nothing on this machine: MASTER_ADDR (127.0.0.1) and
MASTER_PORT (a free port, the same for every host of the job), which torchrun's static rendezvous reads
(trainer_image/llmt_trainer/launch.py), and GLOO_SOCKET_IFNAME, the loopback interface, so that gloo's CPU
process group connects over it.

A container's end ends every process in it. The entry point leads its own process group, but torchrun starts its
workers in sessions of their own, so a signal to the group misses them (and once torchrun is gone they are
nobody's children). So every process of a container carries CONTAINER_ENV (inherited: torchrun passes its
environment on), and signalling a container signals its group and every process whose environment holds its
marker (/proc on Linux; elsewhere the group only).
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .container import HOST, ContainerPaths
from .logstream import JobLog
from .s3_transfers import DirectorySync

LOOPBACK_ADDRESS = "127.0.0.1"
CONTAINER_ENV = "SAGEMAKER_EMULATOR_CONTAINER"
PROC = Path("/proc")


def host_names(request: dict[str, Any]) -> list[str]:
    """algo-1 ... algo-N, N the request's InstanceCount (1 when absent)."""
    count = int((request.get("ResourceConfig") or {}).get("InstanceCount", 1))
    return [f"algo-{index}" for index in range(1, count + 1)]


def host_root(job_dir: Path, host: str, hosts: list[str]) -> Path:
    """Where a host's /opt/ml lies: `<job>/opt_ml` for a one-instance job (as ever), `<job>/<host>/opt_ml` else."""
    return job_dir / "opt_ml" if hosts == [HOST] else job_dir / host / "opt_ml"


def loopback_interface() -> str | None:
    """The name of the loopback interface (lo on Linux, lo0 on macOS), for gloo; None if none is found."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def container_marker(job_name: str, host: str) -> str:
    return f"{job_name}/{host}/{uuid.uuid4().hex}"


def cluster_environment(host: str, hosts: list[str], master_port: int | None, marker: str) -> dict[str, str]:
    """What a host process needs beyond SageMaker's own variables: its container's marker, and to find the other
    hosts on this machine."""
    env = {CONTAINER_ENV: marker}
    if len(hosts) == 1 or master_port is None:
        return env
    env.update({"MASTER_ADDR": LOOPBACK_ADDRESS, "MASTER_PORT": str(master_port)})
    interface = loopback_interface()
    if interface:
        env["GLOO_SOCKET_IFNAME"] = interface
    return env


@dataclass
class HostRun:
    """One host's container while it runs: its process, its log, its checkpoint sync and what it printed last."""

    host: str
    paths: ContainerPaths
    process: subprocess.Popen[bytes]
    log: JobLog
    sync: DirectorySync | None
    marker: str
    last_lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=5))
    exit_code: int | None = None
    pump: threading.Thread | None = None

    def start_pump(self, job_name: str, on_line: Callable[[str], None]) -> None:
        assert self.process.stdout is not None
        self.pump = threading.Thread(target=self._pump, name=f"out-{job_name}-{self.host}", daemon=True,
                                     args=(self.process.stdout, on_line))
        self.pump.start()

    def _pump(self, stream: IO[bytes], on_line: Callable[[str], None]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.log.write(line)
            self.last_lines.append(line)
            on_line(line)

    def signal(self, sig: signal.Signals) -> None:
        """`sig` to every process of this container: the entry point's group, and whatever carries its marker."""
        signal_container(self.process, self.marker, sig)

    def poll(self) -> int | None:
        if self.exit_code is None:
            self.exit_code = self.process.poll()
        return self.exit_code


def marked_processes(marker: str) -> list[int]:
    """The pids whose environment holds CONTAINER_ENV=`marker` (empty where /proc cannot tell)."""
    needle = f"{CONTAINER_ENV}={marker}".encode() + b"\0"
    found = []
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if b"\0" + needle in b"\0" + environ + b"\0":
            found.append(int(entry.name))
    return found


def signal_container(process: subprocess.Popen[bytes], marker: str | None, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # the entry point leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in marked_processes(marker) if marker else []:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
