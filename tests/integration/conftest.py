"""Each service against the embedded AWS over real HTTP: the moto server, provisioned from the one
resource description, and the service itself served by uvicorn on a free port."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.local import provision
from shared.contracts import resources
from tests.support.aws import AwsEndpoint
from tests.support.servers import serve


@pytest.fixture(scope="session", autouse=True)
def service_token() -> Iterator[str]:
    """The credential every service of a deployment shares for `/internal` (the gateway's calls to auth); set in
    the environment while the integration tests run, so every server a test builds, in this process or a child,
    reads the same one; taken away again after them (the unit tests check what happens without one)."""
    saved = os.environ.get("SERVICE_TOKEN")
    token = saved or secrets.token_urlsafe(32)
    os.environ["SERVICE_TOKEN"] = token
    yield token
    if saved is None:
        os.environ.pop("SERVICE_TOKEN", None)


@pytest.fixture(scope="session")
def provisioned(aws: AwsEndpoint) -> dict[str, Any]:
    return provision.apply(resources.describe())


@pytest.fixture(scope="session")
def auth_url(provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from services.auth.app import build_app
    from services.auth.settings import Settings

    key_file: Path = tmp_path_factory.mktemp("auth") / "key.pem"
    # 4 rounds keeps the suite fast (the default of 12 is checked in the unit tests); generous limits
    # because every test signs up from 127.0.0.1 (the limits have their own tests).
    settings = Settings(bcrypt_rounds=4, jwt_key_file=key_file, register_limit_per_ip=(100_000, 600),
                        login_limit_per_ip=(100_000, 300), refresh_limit_per_ip=(100_000, 60))
    with serve(build_app(settings)) as url:
        os.environ["AUTH_JWKS_URL"] = f"{url}/.well-known/jwks.json"
        yield url


@pytest.fixture(scope="session")
def files_url(auth_url: str) -> Iterator[str]:
    from services.files.app import build_app
    from services.files.settings import Settings

    with serve(build_app(Settings())) as url:
        yield url


@pytest.fixture(scope="session")
def training_url(auth_url: str) -> Iterator[str]:
    from services.training.app import build_app
    from services.training.settings import Settings

    with serve(build_app(Settings())) as url:
        yield url
