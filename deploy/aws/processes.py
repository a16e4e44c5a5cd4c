"""The processes the platform runs in AWS, one ECS service each, as data.

A service's image holds its API and its worker entry points; each process is its own ECS service with its own
task role (`deploy.aws.iam`) and its own scaling signal: APIs on CPU, queue workers on their queue's depth.
The reconciler polls SageMaker on a timer, so a second copy would only repeat the same calls: it runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["api", "worker", "singleton"]


@dataclass(frozen=True)
class Process:
    name: str  # also the ECS service's and log group's name, after the prefix
    service: str  # which service's image, settings, tables, queues and topics it uses
    module: str  # `python -m <module>`
    kind: Kind
    port: int | None = None  # APIs only
    public: bool = False  # behind the load balancer (only the gateway)
    # The services whose APIs it calls over HTTP: what its security group may reach (deploy.aws.network).
    calls: tuple[str, ...] = ()
    cpu: int = 512  # Fargate units (1024 = one vCPU)
    memory_mib: int = 1024
    min_tasks: int = 1
    max_tasks: int = 4

    @property
    def logical_id(self) -> str:
        """CloudFormation logical ids are alphanumeric: `files-worker` -> `FilesWorker`."""
        return "".join(part.capitalize() for part in self.name.split("-"))


# The ports are the local defaults (services/*/app.py), so a service behaves the same in both places.
# The gateway proxies to every API and asks auth about API keys and revocations; the other APIs fetch auth's
# signing keys (JWKS) to verify tokens, and training asks files about a file its projection has not heard of yet
# (services/training/files_directory.py). Workers and reconcilers call no API.
_JWKS = ("auth",)
PROCESSES: tuple[Process, ...] = (
    Process("gateway", "gateway", "services.gateway.app", "api", port=5000, public=True, max_tasks=6,
            calls=("auth", "files", "training", "inference")),
    Process("auth", "auth", "services.auth.app", "api", port=5001),  # bcrypt is CPU-bound: it scales on CPU
    Process("files", "files", "services.files.app", "api", port=5002, calls=_JWKS),
    Process("training", "training", "services.training.app", "api", port=5003, calls=(*_JWKS, "files")),
    # Chat completions hold a connection open while the endpoint generates (awaiting, not computing): CPU is
    # still the signal, streams cost little of it.
    Process("inference", "inference", "services.inference.app", "api", port=5004, max_tasks=6, calls=_JWKS),
    # Validation streams whole files: more memory than an API needs.
    Process("files-worker", "files", "services.files.worker", "worker", memory_mib=2048, max_tasks=6),
    Process("training-worker", "training", "services.training.worker", "worker"),
    Process("training-reconciler", "training", "services.training.reconciler", "singleton", cpu=256,
            memory_mib=512, max_tasks=1),
    # Deployments (SageMaker's create and delete calls) and evaluations (many generations, then a results file).
    Process("inference-worker", "inference", "services.inference.worker", "worker"),
    # Advances creating and deleting deployments and takes idle ones down, on a timer.
    Process("inference-reconciler", "inference", "services.inference.reconciler", "singleton", cpu=256,
            memory_mib=512, max_tasks=1),
)

SERVICES: tuple[str, ...] = tuple(dict.fromkeys(p.service for p in PROCESSES))


def api_of(service: str) -> Process:
    return next(p for p in PROCESSES if p.service == service and p.kind == "api")
