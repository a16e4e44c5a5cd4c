"""Request body limits over real HTTP: auth and the gateway, each a real uvicorn process of its own on the
emulated AWS, refuse a 300 MiB body to the unauthenticated `POST /auth/login` with 413 in the envelope, and
their memory stays flat while it arrives (peak resident memory, read from /proc: a memory assertion, not a
timing one). Every service's app has the limit, and the routes that take more (uploads, chat) keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.support.aws import ROOT, free_port, wait_http

MIB = 1024 * 1024
BIG = 300  # MiB, as in the finding
FLAT = 50 * MIB  # what the server's peak memory may grow by while refusing it


@contextmanager
def service_process(module: str, log: Path, **env: str) -> Iterator[tuple[str, int]]:
    """`python -m <module>` as a deployment runs it, on a free port: (its URL, its pid)."""
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PORT": str(port), "LOG_LEVEL": "WARNING", **env}
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", deadline_s=60, proc=process)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def peak_memory(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


def huge_login_body() -> Iterator[bytes]:
    """A JSON body of 300 MiB, sent chunked (no Content-Length): nothing tells the server its size up front."""
    chunk = b"a" * MIB
    yield b'{"email": "x@example.com", "password": "'
    for _ in range(BIG):
        yield chunk
    yield b'"}'


@pytest.fixture(scope="module")
def auth_process(provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("auth-process")
    with service_process("services.auth.app", tmp / "auth.log", JWT_KEY_FILE=str(tmp / "key.pem"),
                         BCRYPT_ROUNDS="4") as running:
        yield running


@pytest.fixture(scope="module")
def gateway_process(auth_process: tuple[str, int], tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[tuple[str, int]]:
    auth_url, _ = auth_process
    with service_process("services.gateway.app", tmp_path_factory.mktemp("gateway") / "gateway.log",
                         AUTH_URL=auth_url, AUTH_JWKS_URL=f"{auth_url}/.well-known/jwks.json",
                         REVOCATION_CATCH_UP_WAIT_S="1") as running:
        yield running


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"] == {
        "message": "The request body is larger than this route's limit of 1048576 bytes.",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}


@pytest.mark.parametrize("server", ["auth_process", "gateway_process"])
def test_a_300_mib_login_body_is_refused_without_being_held(server: str, request: pytest.FixtureRequest) -> None:
    url, pid = request.getfixturevalue(server)
    warm = httpx.post(f"{url}/auth/login", json={"email": "nobody@example.com", "password": "wrong one"})
    assert warm.status_code == 401  # a body within the limit reaches auth as ever
    before = peak_memory(pid)

    chunked = httpx.post(f"{url}/auth/login", content=huge_login_body(), timeout=120)
    declared = httpx.post(f"{url}/auth/login", content=b"a" * (BIG * MIB), timeout=120)

    _assert_refused(chunked)
    _assert_refused(declared)
    grown = peak_memory(pid) - before
    assert grown < FLAT, f"{server} grew by {grown / MIB:.0f} MiB while refusing the body"


# ---- every service's app, and the routes that take more ----------------------------------------------------

def _apps() -> dict[str, FastAPI]:
    from services.auth.app import build_app as auth_app
    from services.files.app import build_app as files_app
    from services.gateway.app import build_app as gateway_app
    from services.inference.app import build_app as inference_app
    from services.training.app import build_app as training_app

    return {"auth": auth_app(), "files": files_app(), "training": training_app(), "inference": inference_app(),
            "gateway": gateway_app()}


# (method, path, body size): within that route's limit, so the body is not what refuses it (no token is).
ROUTES_AT_THEIR_LIMIT = [
    ("files", "POST", "/v1/files", 100 * MIB),
    ("files", "POST", "/api/uploads/file-1/complete", 3 * MIB),
    ("inference", "POST", "/v1/chat/completions", 3 * MIB),
]
# Past the default 1 MiB, or past a route's own limit.
ROUTES_OVER_THEIR_LIMIT = [
    ("auth", "POST", "/auth/register", 2 * MIB),
    ("files", "POST", "/api/uploads", 2 * MIB),
    ("training", "POST", "/v1/fine_tuning/jobs", 2 * MIB),
    ("inference", "POST", "/api/deployments", 2 * MIB),
    ("inference", "POST", "/v1/chat/completions", 5 * MIB),
    ("gateway", "POST", "/v1/fine_tuning/jobs", 2 * MIB),
    ("gateway", "POST", "/v1/chat/completions", 5 * MIB),
    ("gateway", "POST", "/api/uploads/file-1/complete", 5 * MIB),
]


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    return _apps()


@pytest.mark.parametrize(("service", "method", "path", "size"), ROUTES_OVER_THEIR_LIMIT)
def test_every_service_refuses_a_body_over_its_routes_limit(apps: dict[str, FastAPI], service: str, method: str,
                                                            path: str, size: int) -> None:
    # Declared as a length: refused before a byte is read, so no lifespan, token or AWS is needed to see it.
    response = TestClient(apps[service]).request(method, path, headers={"content-length": str(size)},
                                                 content=b"")
    assert response.status_code == 413, (service, path, response.text)
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(("service", "method", "path", "size"), ROUTES_AT_THEIR_LIMIT)
def test_uploads_and_chat_keep_their_larger_limits(apps: dict[str, FastAPI], auth_url: str, service: str,
                                                   method: str, path: str, size: int) -> None:
    with TestClient(apps[service]) as client:  # started: its token verifier answers
        response = client.request(method, path, headers={"content-length": str(size)}, content=b"")
    assert response.status_code == 401, (service, path, response.text)  # the token is what is missing


@pytest.mark.parametrize(("path", "size"), [("/v1/files", 100 * MIB), ("/v1/chat/completions", 3 * MIB)])
def test_the_gateway_passes_uploads_and_chat_within_their_limits(gateway_process: tuple[str, int], path: str,
                                                                 size: int) -> None:
    url, _ = gateway_process
    response = httpx.post(f"{url}{path}", content=b"a" * size, timeout=60)
    assert response.status_code == 401, response.text  # the token is what is missing, not room for the body
