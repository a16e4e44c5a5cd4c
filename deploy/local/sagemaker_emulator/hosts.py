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
"""

from __future__ import annotations

import collections
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .container import HOST, ContainerPaths
from .logstream import JobLog
from .s3_transfers import DirectorySync

LOOPBACK_ADDRESS = "127.0.0.1"


def host_names(request: dict[str, Any]) -> list[str]:
    """algo-1 ... algo-N, N the request's InstanceCount (1 when absent)."""
    count = int((request.get("ResourceConfig") or {}).get("InstanceCount", 1))
    return [f"algo-{index}" for index in range(1, count + 1)]


def host_root(job_dir: Path, host: str, hosts: list[str]) -> Path:
    """Where a host's /opt/ml lies: `<job>/opt_ml` for a one-instance job (as ever), `<job>/<host>/opt_ml` else."""
    return job_dir / "opt_ml" if hosts == [HOST] else job_dir / host / "opt_ml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_ADDRESS, 0))
        return int(probe.getsockname()[1])


def loopback_interface() -> str | None:
    """The name of the loopback interface (lo on Linux, lo0 on macOS), for gloo; None if none is found."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return None
    return next((name for name in ("lo", "lo0") if name in names), None)


def cluster_environment(host: str, hosts: list[str], master_port: int | None) -> dict[str, str]:
    """What a host process needs beyond SageMaker's own variables to find the others on this machine."""
    if len(hosts) == 1 or master_port is None:
        return {}
    env = {"MASTER_ADDR": LOOPBACK_ADDRESS, "MASTER_PORT": str(master_port)}
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

    def poll(self) -> int | None:
        if self.exit_code is None:
            self.exit_code = self.process.poll()
        return self.exit_code
