"""What ships is what is tested: every entry point of the services' image starts with only what that image has.

The service image (deploy/docker/service.Dockerfile) installs requirements/services.txt and copies a few folders.
Here each process of deploy/aws/processes.py (every API, worker and the reconciler) runs with a clean virtualenv
that has only that file installed, from a directory holding only what the Dockerfile copies for its service, against
the embedded AWS: an API must answer /healthz, a worker must start consuming, and each must stop cleanly on
SIGTERM. The full development environment (moto, torch, pytest...) hides a missing requirement; this does not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.aws.processes import PROCESSES, Process
from tests.support.aws import ROOT, free_port
from tests.support.images import clean_venv, image_tree

SERVICE_DOCKERFILE = ROOT / "deploy" / "docker" / "service.Dockerfile"
STARTED = {"worker": "consumer started", "singleton": "reconciler started"}


@pytest.fixture(scope="module")
def services_python() -> Path:
    return clean_venv(ROOT / "requirements" / "services.txt", "services-image")


@pytest.fixture(scope="module")
def env(provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the processes are configured with: the embedded AWS, and the local service URLs on free ports.
    Nothing from this test process's environment leaks in (no PYTHONPATH, no virtualenv on PATH)."""
    ports = {name: free_port() for name in ("gateway", "auth", "files", "training", "inference")}
    data = tmp_path_factory.mktemp("image-run")
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(data), "PYTHONUNBUFFERED": "1",
        "ENVIRONMENT": "development", "LOG_LEVEL": "INFO",
        **{k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY") if k in os.environ},
        "AUTH_URL": f"http://127.0.0.1:{ports['auth']}", "FILES_URL": f"http://127.0.0.1:{ports['files']}",
        "TRAINING_URL": f"http://127.0.0.1:{ports['training']}",
        "INFERENCE_URL": f"http://127.0.0.1:{ports['inference']}",
        "AUTH_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
        "JWT_KEY_FILE": str(data / "jwt-signing-key.pem"),
        **{f"PORT_{name.upper()}": str(port) for name, port in ports.items()},
    }


def _port(process: Process, env: dict[str, str]) -> str:
    return env[f"PORT_{process.service.upper()}"]


def _wait(condition: Any, what: str, proc: subprocess.Popen[bytes], log: Path, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"{what}: exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {deadline_s}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)  # a poll interval, bounded by the deadline above


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def auth_api(services_python: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Auth from its own image first: the other services read its JWKS, and the gateway its revocations."""
    process = next(p for p in PROCESSES if p.name == "auth")
    with _running(process, services_python, env, tmp_path_factory.mktemp("auth-image")):
        yield


def _stopped_cleanly(running: _running) -> None:
    """A worker returns 0 after finishing what it had in hand. uvicorn re-raises SIGTERM once its graceful shutdown
    is over (so the exit status is -SIGTERM), which is clean only if the app's shutdown completed."""
    log = running.log.read_text()
    if running.process.kind == "api":
        assert running.returncode in (0, -signal.SIGTERM), log[-3000:]
        assert "Application shutdown complete" in log, log[-3000:]
    else:
        assert running.returncode == 0, log[-3000:]


class _running:
    """One process from its image tree, up (healthy or consuming) inside the block, stopped by SIGTERM after it."""

    def __init__(self, process: Process, python: Path, env: dict[str, str], root: Path) -> None:
        self.process, self.python, self.env, self.root = process, python, env, root
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def __enter__(self) -> _running:
        process = self.process
        app = image_tree(SERVICE_DOCKERFILE, ROOT, "/app", self.root / "app", {"SERVICE": process.service})
        self.log = self.root / f"{process.name}.log"
        env = {**self.env, "PYTHONPATH": str(app), "PORT": _port(process, self.env)}
        self.proc = subprocess.Popen([str(self.python), "-m", process.module], cwd=app, env=env,
                                     stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        if process.kind == "api":
            url = f"http://127.0.0.1:{env['PORT']}/healthz"
            _wait(lambda: _answers(url), f"{process.name} /healthz", self.proc, self.log)
        else:
            marker = STARTED[process.kind]
            _wait(lambda: marker in self.log.read_text(), f"{process.name} {marker!r}", self.proc, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.mark.parametrize("service", sorted({p.service for p in PROCESSES}))
def test_the_service_image_imports_every_entry_point_of_a_service(
        service: str, services_python: Path, tmp_path: Path) -> None:
    """Importing is the first thing that breaks (a module of a package the requirements do not install, or a
    file the image does not copy)."""
    app = image_tree(SERVICE_DOCKERFILE, ROOT, "/app", tmp_path / "app", {"SERVICE": service})
    modules = [p.module for p in PROCESSES if p.service == service]
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(app)}
    result = subprocess.run([str(services_python), "-c", "import importlib, sys\n"
                             "for m in sys.argv[1:]: importlib.import_module(m)", *modules],
                            cwd=app, capture_output=True, text=True, env=clean)
    assert result.returncode == 0, result.stderr[-3000:]
    # The virtualenv is clean and the tree is the image's: what only the development checkout has is absent.
    for absent in ("moto", "pytest", "torch", "deploy.local", "tests"):
        probe = subprocess.run([str(services_python), "-c", f"import {absent}"], cwd=app, capture_output=True,
                               env=clean)
        assert probe.returncode != 0, f"{absent} is importable in the {service} image"


@pytest.mark.parametrize("process", [p for p in PROCESSES if p.name != "auth"], ids=lambda p: p.name)
def test_each_entry_point_starts_from_its_image_and_stops_on_sigterm(
        process: Process, services_python: Path, env: dict[str, str], auth_api: None,
        tmp_path: Path) -> None:
    with _running(process, services_python, env, tmp_path) as running:
        assert running.proc is not None and running.proc.poll() is None
    _stopped_cleanly(running)


def test_auth_starts_from_its_image_and_stops_on_sigterm(
        services_python: Path, env: dict[str, str], tmp_path: Path, auth_api: None) -> None:
    """auth_api (module-wide) already proved it starts; a second copy on another port stops cleanly too."""
    process = next(p for p in PROCESSES if p.name == "auth")
    with _running(process, services_python, {**env, "PORT_AUTH": str(free_port())}, tmp_path) as running:
        assert running.proc is not None and running.proc.poll() is None
    _stopped_cleanly(running)


TRAINER_DOCKERFILE = ROOT / "trainer_image" / "Dockerfile"


def test_the_trainer_image_trains_with_only_its_own_requirements(tmp_path: Path) -> None:
    """The fine-tune container: a clean virtualenv with trainer_image/requirements.txt and the files its Dockerfile
    copies to /opt/ml/code, run as SageMaker runs it (the SM_* contract), trains the tiny demo model one epoch."""
    from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl

    python = clean_venv(ROOT / "trainer_image" / "requirements.txt", "trainer-image")
    code = image_tree(TRAINER_DOCKERFILE, ROOT / "trainer_image", "/opt/ml/code", tmp_path / "code")
    ml = tmp_path / "ml"
    config, train, model_dir = ml / "input" / "config", ml / "input" / "data" / "train", ml / "model"
    for folder in (config, train, model_dir, ml / "output" / "data", ml / "checkpoints"):
        folder.mkdir(parents=True)
    (config / "hyperparameters.json").write_text('{"n_epochs": "1", "batch_size": "4", "seed": "3"}')
    write_jsonl(make_demo_dataset(12, seed=0), train / "part-0.jsonl")
    base = build_demo_model(tmp_path / "base")  # built with the development environment: only the input here
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "SM_INPUT_DIR": str(ml / "input"), "SM_INPUT_CONFIG_DIR": str(config), "SM_CHANNEL_TRAIN": str(train),
           "SM_CHANNEL_MODEL": str(base), "SM_MODEL_DIR": str(model_dir),
           "SM_OUTPUT_DATA_DIR": str(ml / "output" / "data"), "SM_OUTPUT_DIR": str(ml / "output"),
           "SM_CHECKPOINT_DIR": str(ml / "checkpoints")}
    result = subprocess.run([str(python), str(code / "finetune.py")], cwd=code, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "METRICS" in result.stdout
    assert (model_dir / "adapter_config.json").exists(), sorted(p.name for p in model_dir.iterdir())
    # QLoRA's bitsandbytes installs and imports beside the pinned torch (its 4-bit kernels need CUDA: not run here).
    probe = subprocess.run([str(python), "-c", "import bitsandbytes"], env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
