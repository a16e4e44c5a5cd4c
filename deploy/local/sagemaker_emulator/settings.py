"""The emulator's settings: `SAGEMAKER_EMULATOR_*` from the environment, overridable on the command line."""

from __future__ import annotations

import fnmatch
import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode

from shared.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_ENTRYPOINT = [sys.executable, str(REPO_ROOT / "trainer_image" / "finetune.py")]
DEFAULT_SERVING_COMMAND = (sys.executable, "-m", "deploy.local.generation_server")


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"SAGEMAKER_EMULATOR_{name}", name.lower())


class Settings(ServiceSettings):
    host: str = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(4567, validation_alias=_env("PORT"))
    workdir: Path = Field(Path(".data/sagemaker"), validation_alias=_env("WORKDIR"))
    max_jobs: int = Field(1, ge=1, validation_alias=_env("MAX_JOBS"))
    # TrainingImage (a glob) -> command. JSON: {"image-glob": ["cmd", "arg"] | "cmd arg", ...}; a bare
    # list or string applies to every image.
    entrypoint: Annotated[dict[str, list[str]], NoDecode] = Field(
        default_factory=lambda: {"*": DEFAULT_ENTRYPOINT}, validation_alias=_env("ENTRYPOINT"))
    # SageMaker grants 120 s between SIGTERM and SIGKILL; locally that would only slow things down.
    stop_grace_s: float = Field(10.0, gt=0, validation_alias=_env("STOP_GRACE_SECONDS"))
    # When the emulator itself is told to stop, it must be done before a process manager loses patience.
    shutdown_grace_s: float = Field(3.0, gt=0, validation_alias=_env("SHUTDOWN_GRACE_SECONDS"))
    checkpoint_sync_s: float = Field(30.0, gt=0, validation_alias=_env("CHECKPOINT_SYNC_SECONDS"))
    # A managed-spot job interrupted (POST /_emulator/jobs/{name}/interrupt) waits this long for "capacity"
    # before it starts again; that wait is not billed.
    spot_restart_delay_s: float = Field(2.0, ge=0, validation_alias=_env("SPOT_RESTART_DELAY_SECONDS"))
    log_flush_s: float = Field(1.0, gt=0, validation_alias=_env("LOG_FLUSH_SECONDS"))
    account_id: str = Field("123456789012", validation_alias=_env("ACCOUNT_ID"))
    event_bus: str = Field("default", validation_alias=_env("EVENT_BUS"))

    # Hosting (endpoints and inference components, see hosting.py): each base inference component runs
    # `serving_command --model-dir DIR|--hub-id ID --port P ...` (the local LMI stand-in).
    serving_command: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_SERVING_COMMAND), validation_alias=_env("SERVING_COMMAND"))
    # SageMaker's ContainerStartupHealthCheckTimeoutInSeconds: how long a server may take to answer /ping.
    serving_startup_s: float = Field(300.0, gt=0, validation_alias=_env("SERVING_STARTUP_SECONDS"))
    # torch's CPU threads in each server (unset: the server's own default, OMP_NUM_THREADS or 2).
    serving_torch_threads: int | None = Field(None, ge=1, validation_alias=_env("SERVING_TORCH_THREADS"))
    serving_max_waiting: int = Field(256, ge=0, validation_alias=_env("SERVING_MAX_WAITING"))
    # How long an invocation may wait for the server's answer (its first byte, for a stream).
    invocation_timeout_s: float = Field(600.0, gt=0, validation_alias=_env("INVOCATION_TIMEOUT_SECONDS"))
    hosting_workers: int = Field(16, ge=1, validation_alias=_env("HOSTING_WORKERS"))

    @field_validator("serving_command", mode="before")
    @classmethod
    def _parse_serving_command(cls, value: object) -> object:
        if isinstance(value, str):
            stripped = value.strip()
            return json.loads(stripped) if stripped.startswith("[") else shlex.split(stripped)
        return value

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _parse_entrypoint(cls, value: object) -> object:
        if isinstance(value, str):
            stripped = value.strip()
            value = json.loads(stripped) if stripped[:1] in "[{" else stripped
        if isinstance(value, (str, list)):
            value = {"*": value}
        if isinstance(value, dict):
            return {image: shlex.split(cmd) if isinstance(cmd, str) else cmd for image, cmd in value.items()}
        return value

    def entrypoint_for(self, training_image: str) -> list[str] | None:
        """The command for an image: an exact match first, then the first glob that matches."""
        if training_image in self.entrypoint:
            return self.entrypoint[training_image]
        for pattern, command in self.entrypoint.items():
            if fnmatch.fnmatchcase(training_image, pattern):
                return command
        return None
