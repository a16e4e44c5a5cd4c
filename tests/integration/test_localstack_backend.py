"""The resource description applied to LocalStack (testcontainers) and a service run against it: the
docker-compose path. Where no Docker daemon runs (as on the CI machines here), this is skipped with the
reason; `LLMT_TEST_AWS=localstack make test` runs the whole integration suite there instead of moto."""

from __future__ import annotations

import httpx

from deploy.local import provision
from shared.contracts import resources
from tests.support.aws import localstack_endpoint
from tests.support.servers import serve


def test_provision_and_auth_on_localstack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with localstack_endpoint():
        first = provision.apply(resources.describe())
        assert provision.apply(resources.describe()) == first  # idempotent
        from services.auth.app import build_app
        from services.auth.settings import Settings

        with serve(build_app(Settings(bcrypt_rounds=4, jwt_key_file=tmp_path / "k.pem"))) as url:
            response = httpx.post(f"{url}/auth/register", json={"email": "ls@example.com", "password": "pw-123456"})
            assert response.status_code == 201, response.text
