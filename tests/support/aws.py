"""The embedded AWS for tests: moto's server over real HTTP on a free port (or LocalStack), the SageMaker
emulator as a process, and the small helpers both need (free ports, waiting for a URL to answer)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_emulator_process(workdir: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The local SageMaker emulator as `make up` runs it, on a free port, answering: (process, URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "deploy.local.sagemaker_emulator", "--port", str(port),
                                "--workdir", str(workdir)], cwd=ROOT, env=env, stdout=log.open("ab"),
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc=process)
    except BaseException:
        process.kill()
        process.wait(timeout=20)
        raise
    return process, url


def wait_http(url: str, deadline_s: float = 30, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s")


@dataclass
class AwsEndpoint:
    url: str

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


AWS_TEST_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


# The one switch: LLMT_TEST_AWS=localstack runs the same tests against LocalStack, started by
# testcontainers, instead of moto's server. Without a Docker daemon those runs are skipped, saying why.
BACKEND = os.environ.get("LLMT_TEST_AWS", "moto")
LOCALSTACK_IMAGE = "localstack/localstack:4"


def docker_unavailable_reason() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as exc:
        return f"LocalStack runs need a Docker daemon and none is reachable here ({type(exc).__name__})"


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def localstack_endpoint() -> Iterator[AwsEndpoint]:
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from testcontainers.community.localstack import LocalStackContainer  # type: ignore[import-not-found]

    with LocalStackContainer(image=LOCALSTACK_IMAGE, region_name="us-east-1") as container:
        url = container.get_url()
        with _env({**AWS_TEST_ENV, "AWS_ENDPOINT_URL": url}):
            yield AwsEndpoint(url)


@contextmanager
def moto_endpoint(log_dir: Path) -> Iterator[AwsEndpoint]:
    """moto's server on a free port; the process environment points every AWS client at it meanwhile."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (log_dir / "moto.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "deploy.local.embedded_aws", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with _env({**AWS_TEST_ENV, "AWS_ENDPOINT_URL": url}):
            wait_http(f"{url}/moto-api/", proc=proc)
            yield AwsEndpoint(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
