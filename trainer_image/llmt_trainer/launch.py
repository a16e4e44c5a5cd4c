"""The process layout, decided when the container starts: one process in this one (as before), or torchrun over
every GPU of every host (data parallel, see distributed.py), as SageMaker's "torch_distributed" distribution runs
a script.

Hosts come from resourceconfig.json (`hosts`, `current_host`), which SageMaker writes into every training
container's input config dir, else from SM_HOSTS (a JSON list) and SM_CURRENT_HOST; neither: one host. Processes
per host: one per CUDA GPU (SM_NUM_GPUS where the toolkit set it, else torch.cuda.device_count()), one on a CPU.
When the layout has more than one process and either the hyperparameter `sagemaker_torch_distributed_enabled` is
true (what SageMaker's SDK sets for distribution={"torch_distributed": {"enabled": True}}) or there is more than
one host, this process becomes (os.execv, same pid) `python -m torch.distributed.run ... finetune.py <same args>`:
torchrun starts this host's workers, each of which runs finetune.py again, now with LOCAL_RANK and WORLD_SIZE set,
so it runs as one rank (a container started under torchrun by SageMaker's toolkit is one already).

The rendezvous: MASTER_ADDR (else the first of the sorted hosts: SageMaker's hosts, algo-1..., resolve by name)
and MASTER_PORT (else 7777). Stops: torchrun forwards SIGTERM/SIGINT to its workers (which it starts in sessions
of their own) and kills them SHUTDOWN_TIMEOUT_S later, inside SageMaker's 120 s of grace.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .gpu_check import read_resource_config
from .hyperparameters import unquote

log = logging.getLogger(__name__)

DISTRIBUTION_HYPERPARAMETER = "sagemaker_torch_distributed_enabled"
DEFAULT_MASTER_PORT = "7777"
# torchrun's wait between forwarding a stop signal and SIGKILL: the workers finish their step and write the
# checkpoint in it. SageMaker kills the container 120 s after its SIGTERM.
SHUTDOWN_TIMEOUT_S = 110
WORKER_ENV = ("LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Layout:
    hosts: tuple[str, ...]  # sorted
    current_host: str
    processes_per_host: int

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.processes_per_host

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host) if self.current_host in self.hosts else 0


def is_worker(env: Mapping[str, str]) -> bool:
    """Started by torchrun (ours, or SageMaker's toolkit's): this process is one rank."""
    return any(name in env for name in WORKER_ENV)


def read_hosts(input_config_dir: Path, env: Mapping[str, str]) -> tuple[tuple[str, ...], str]:
    """(sorted hosts, this host) from resourceconfig.json, else SM_HOSTS/SM_CURRENT_HOST; else one host."""
    config = read_resource_config(input_config_dir, "hosts from SM_HOSTS")
    hosts: object = config.get("hosts")
    current: object = config.get("current_host")
    if not hosts:
        try:
            hosts = json.loads(env.get("SM_HOSTS", "[]"))
        except json.JSONDecodeError:
            hosts = []
        current = env.get("SM_CURRENT_HOST")
    if not isinstance(hosts, list) or not hosts:
        return ("localhost",), "localhost"
    names = tuple(sorted(str(h) for h in hosts))
    return names, str(current) if current else names[0]


def gpus_per_host(env: Mapping[str, str]) -> int:
    """SM_NUM_GPUS (the sagemaker-training toolkit's) or the CUDA devices torch sees; 0 without CUDA."""
    value = env.get("SM_NUM_GPUS")
    if value is not None and value.strip().isdigit():
        return int(value)
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def distribution_enabled(hyperparameters: Mapping[str, object]) -> bool:
    value = unquote(hyperparameters.get(DISTRIBUTION_HYPERPARAMETER))
    return str(value).strip().lower() in ("true", "1", "yes")


def torchrun_argv(layout: Layout, script: str, args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command this process becomes: torchrun over this host's processes, running `script` with `args`."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(len(layout.hosts)), "--node_rank", str(layout.node_rank),
        "--nproc_per_node", str(layout.processes_per_host),
        "--master_addr", env.get("MASTER_ADDR") or layout.hosts[0],
        "--master_port", env.get("MASTER_PORT") or DEFAULT_MASTER_PORT,
        "--shutdown_timeout", str(SHUTDOWN_TIMEOUT_S),
        script, *args,
    ]  # fmt: skip


def relaunch_command(input_config_dir: Path, env: Mapping[str, str], hyperparameters: Mapping[str, object],
                     script: str, args: Sequence[str], gpus: int | None = None) -> list[str] | None:
    """The torchrun command this process should become, or None: run here, in this process (one process in all,
    a worker already, or several GPUs on one host without the distribution asked for)."""
    if is_worker(env):
        return None
    hosts, current = read_hosts(input_config_dir, env)
    layout = Layout(hosts, current, max(1, gpus_per_host(env) if gpus is None else gpus))
    if layout.world_size == 1:
        return None
    if not (distribution_enabled(hyperparameters) or len(hosts) > 1):
        log.info("%d GPUs on this host, one used: the hyperparameter %s is not true", layout.processes_per_host,
                 DISTRIBUTION_HYPERPARAMETER)
        return None
    return torchrun_argv(layout, script, args, env)


def relaunch_if_distributed(input_config_dir: Path, hyperparameters: Mapping[str, object],
                            args: Sequence[str]) -> None:
    """Become torchrun (never returns) when the layout asks for it; else return and run in this process."""
    script = str(Path(sys.argv[0]).resolve())
    command = relaunch_command(input_config_dir, os.environ, hyperparameters, script, args)
    if command is None:
        return
    log.info("distributed launch: %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # noqa: S606 - our own interpreter and arguments, no shell
