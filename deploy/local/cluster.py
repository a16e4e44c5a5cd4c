"""The whole platform on one machine: the embedded AWS (moto's server), the local SageMaker emulator, the
five services and their workers, each its own process. Used by `make up`, the e2e tests and bench/."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from deploy.local import provision
from deploy.local.demo_model import install_demo_model
from deploy.local.supervisor import Supervisor
from shared.contracts import resources

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("cluster")


@dataclass(frozen=True)
class Ports:
    moto: int = 4566
    emulator: int = 4567
    gateway: int = 5000
    auth: int = 5001
    files: int = 5002
    training: int = 5003
    inference: int = 5004

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(7)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """Children get SIGTERM if the launcher dies, however it dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Process:
    name: str
    argv: list[str]
    health_url: str | None
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    port: int | None = None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()


@dataclass
class Cluster:
    data_dir: Path = ROOT / ".data"
    ports: Ports = field(default_factory=Ports)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Off when AWS_ENDPOINT_URL already points at an AWS (LocalStack, say): then no moto is started.
    embedded_aws: bool = True
    processes: list[Process] = field(default_factory=list)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def aws_url(self) -> str:
        if self.embedded_aws:
            return f"http://127.0.0.1:{self.ports.moto}"
        return os.environ["AWS_ENDPOINT_URL"]

    def env(self) -> dict[str, str]:
        p = self.ports
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               "AWS_ENDPOINT_URL": self.aws_url,
               "AWS_ENDPOINT_URL_SAGEMAKER": f"http://127.0.0.1:{p.emulator}",
               "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{p.emulator}",
               "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
               "AUTH_JWKS_URL": f"http://127.0.0.1:{p.auth}/.well-known/jwks.json",
               "AUTH_URL": f"http://127.0.0.1:{p.auth}", "FILES_URL": f"http://127.0.0.1:{p.files}",
               "TRAINING_URL": f"http://127.0.0.1:{p.training}",
               "INFERENCE_URL": f"http://127.0.0.1:{p.inference}",
               # A chat on a model with no deployment starts one here (README): the SDK flow needs no extra step.
               "DEPLOY_ON_DEMAND": os.environ.get("DEPLOY_ON_DEMAND", "true"),
               "INFERENCE_RECONCILE_INTERVAL_S": os.environ.get("INFERENCE_RECONCILE_INTERVAL_S", "2"),
               # Auth believes only BASE_URL for where the dashboard runs: the gateway's address, unless given.
               "BASE_URL": os.environ.get("BASE_URL") or f"http://localhost:{p.gateway}",
               "JWT_KEY_FILE": str(self.data_dir / "auth" / "jwt-signing-key.pem"),
               # What one service shows another on /internal/* routes (X-Service-Token); made once, kept here.
               "SERVICE_TOKEN": os.environ.get("SERVICE_TOKEN") or self.service_token(),
               "ENVIRONMENT": os.environ.get("ENVIRONMENT", "development")}
        if self.embedded_aws:  # moto accepts any credentials; never send a developer's real ones to it
            env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")  # noqa: S106
            env.pop("AWS_SESSION_TOKEN", None)
            env.pop("AWS_PROFILE", None)
        env.update(self.extra_env)
        return env

    def service_token(self) -> str:
        path = self.data_dir / "auth" / "service-token"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _spawn(self, name: str, argv: list[str], health_url: str | None, port: int | None = None) -> Process:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self.env()
        if port is not None:
            env["PORT"] = str(port)
        proc = Process(name, argv, health_url, log_file=(logs / f"{name}.log").open("ab"), port=port)
        proc.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=proc.log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        self.processes.append(proc)
        return proc

    def _wait_healthy(self, procs: list[Process], deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        pending = [p for p in procs if p.health_url]
        while pending:
            for proc in list(pending):
                assert proc.popen is not None
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see "
                                       f"{self.data_dir / 'logs' / (proc.name + '.log')}")
                try:
                    if httpx.get(str(proc.health_url), timeout=1).status_code < 500:
                        pending.remove(proc)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {deadline_s}s: {', '.join(p.name for p in pending)}")
            if pending:
                time.sleep(0.2)

    def check_ports(self) -> None:
        wanted = {name: port for name, port in vars(self.ports).items() if self.embedded_aws or name != "moto"}
        busy = [f"{name} ({port})" for name, port in wanted.items() if port_in_use(port)]
        if busy:
            raise RuntimeError(f"ports already in use: {', '.join(busy)}. Is the platform already running? "
                               "Stop it, or set other ports.")

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        py, p = sys.executable, self.ports
        if self.embedded_aws:
            self._wait_healthy([self.spawn_moto()])
        self.provision()
        self.install_demo_model()
        servers = [
            self._spawn("sagemaker-emulator", [py, "-m", "deploy.local.sagemaker_emulator", "--port",
                                               str(p.emulator), "--workdir", str(self.data_dir / "sagemaker")],
                        f"http://127.0.0.1:{p.emulator}/health"),
            self._spawn("auth", [py, "-m", "services.auth.app"], f"http://127.0.0.1:{p.auth}/healthz", p.auth),
            self._spawn("files", [py, "-m", "services.files.app"], f"http://127.0.0.1:{p.files}/healthz", p.files),
            self._spawn("training", [py, "-m", "services.training.app"],
                        f"http://127.0.0.1:{p.training}/healthz", p.training),
            self._spawn("inference", [py, "-m", "services.inference.app"],
                        f"http://127.0.0.1:{p.inference}/healthz", p.inference),
            self._spawn("gateway", [py, "-m", "services.gateway.app"], f"http://127.0.0.1:{p.gateway}/healthz",
                        p.gateway),
        ]
        workers = [self._spawn("files-worker", [py, "-m", "services.files.worker"], None),
                   self._spawn("training-worker", [py, "-m", "services.training.worker"], None),
                   # Describes unfinished jobs and reads their metrics every TRAINING_RECONCILE_INTERVAL_S.
                   self._spawn("training-reconciler", [py, "-m", "services.training.reconciler"], None),
                   self._spawn("inference-worker", [py, "-m", "services.inference.worker"], None),
                   # Advances deployments and takes idle ones down every INFERENCE_RECONCILE_INTERVAL_S.
                   self._spawn("inference-reconciler", [py, "-m", "services.inference.reconciler"], None)]
        self._wait_healthy(servers)
        time.sleep(0.5)  # a worker that cannot start fails at once; catch it here rather than later
        for worker in workers:
            assert worker.popen is not None
            if worker.popen.poll() is not None:
                raise RuntimeError(f"{worker.name} exited with {worker.popen.returncode}; see its log")

    def spawn_moto(self) -> Process:
        """The embedded AWS (moto's server through deploy/local/embedded_aws.py) on its port, keeping its state in
        `<data_dir>/aws` across restarts (deploy/local/aws_state.py); not yet healthy."""
        port = self.ports.moto
        return self._spawn("moto", [sys.executable, "-m", "deploy.local.embedded_aws", "-H", "127.0.0.1", "-p",
                                    str(port), "--state-dir", str(self.data_dir / "aws")],
                           f"http://127.0.0.1:{port}/moto-api/")

    def process(self, name: str) -> Process:
        return next(p for p in reversed(self.processes) if p.name == name)  # the newest, during a restart

    def restart(self, name: str) -> Process:
        """Starts the named process again, as it was started, if it has exited; waits until it is healthy where it
        has a health check."""
        old = self.process(name)
        if old.popen is not None and old.popen.poll() is None:
            return old  # still running (started before, slow to become healthy): nothing to do
        if old.log_file:
            old.log_file.close()
        new = self._spawn(name, old.argv, old.health_url, old.port)  # in the list before the old one leaves it
        self.processes.remove(old)
        self._wait_healthy([new])
        return new

    def supervisor(self, first_delay_s: float = 1.0, max_delay_s: float = 30.0) -> Supervisor:
        """Restarts whatever exits, with backoff (deploy/local/supervisor.py); `make up` runs it."""
        return Supervisor(restart=self.restart, exit_code=lambda name: self.process(name).exit_code(),
                          names=lambda: [p.name for p in self.processes], first_delay_s=first_delay_s,
                          max_delay_s=max_delay_s)

    def with_env(self) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def scope() -> Any:
            saved = dict(os.environ)
            os.environ.update({k: v for k, v in self.env().items() if k.startswith("AWS_")})
            try:
                yield
            finally:
                os.environ.clear()
                os.environ.update(saved)
        return scope()

    def provision(self) -> dict[str, Any]:
        with self.with_env():
            bucket = self.env().get("S3_BUCKET_NAME", resources.BUCKET)
            gateway = self.ports.gateway
            return provision.apply(resources.describe(bucket, web_origins=(
                f"http://localhost:{gateway}", f"http://127.0.0.1:{gateway}")))

    def install_demo_model(self) -> None:
        with self.with_env():
            install_demo_model(self.data_dir, self.env().get("S3_BUCKET_NAME", resources.BUCKET), self.env())

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM (SIGKILL after the grace) to the services and workers first, then to the embedded AWS: a
        service's clean stop still talks to it (the gateway deletes its replica queues)."""
        last = [p for p in self.processes if p.name == "moto"]
        self._stop([p for p in self.processes if p.name != "moto"], grace_s)
        self._stop(last, grace_s)
        self.processes.clear()

    @staticmethod
    def _stop(processes: list[Process], grace_s: float) -> None:
        for proc in reversed(processes):
            if proc.popen and proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in reversed(processes):
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killed", proc.name, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
            if proc.log_file:
                proc.log_file.close()

    def describe(self) -> str:
        return json.dumps({p.name: p.popen.pid for p in self.processes if p.popen}, indent=None)
