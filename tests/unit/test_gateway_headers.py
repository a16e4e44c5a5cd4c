"""The gateway's browser-facing headers: the CSP names the one bucket direct uploads go to, and HSTS is on every
answer outside development."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.gateway.app import build_app
from services.gateway.security_headers import HSTS, content_security_policy
from services.gateway.settings import Settings

TOKEN = SecretStr("kV9q2-8fJ3x-mP0zL7w-real-service-token")


@pytest.fixture
def real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint override: the gateway runs against AWS itself."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "UPLOAD_ORIGIN"):
        monkeypatch.delenv(name, raising=False)


def _connect_src(csp: str) -> list[str]:
    directive = next(d.strip() for d in csp.split(";") if d.strip().startswith("connect-src"))
    return directive.split()[1:]


@pytest.mark.usefixtures("real_aws")
def test_on_aws_the_csp_allows_uploads_to_the_buckets_own_origin_only() -> None:
    settings = Settings(S3_BUCKET_NAME="acme-llm-tuner", aws_default_region="eu-west-1")
    csp = content_security_policy(settings)
    assert _connect_src(csp) == ["'self'", "https://acme-llm-tuner.s3.eu-west-1.amazonaws.com"]
    assert "*" not in csp


@pytest.mark.usefixtures("real_aws")
def test_the_csp_follows_an_s3_endpoint_or_an_explicit_upload_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert _connect_src(content_security_policy(Settings()))[1] == "http://127.0.0.1:4566"
    explicit = Settings(UPLOAD_ORIGIN="https://uploads.example.com/ignored/path")
    assert _connect_src(content_security_policy(explicit))[1] == "https://uploads.example.com"


@pytest.mark.usefixtures("real_aws")
def test_outside_development_every_answer_carries_hsts() -> None:
    client = TestClient(build_app(Settings(environment="production", service_token=TOKEN)))
    for path, status in (("/", 200), ("/static/app.css", 200), ("/nowhere", 404), ("/static/nope.js", 404)):
        response = client.get(path)
        assert response.status_code == status, path
        assert response.headers["strict-transport-security"] == HSTS == "max-age=31536000; includeSubDomains"
    too_big = client.post("/auth/login", headers={"content-length": str(2 * 1024 * 1024)}, content=b"")
    assert too_big.status_code == 413 and too_big.headers["strict-transport-security"] == HSTS


def test_in_development_there_is_no_hsts() -> None:
    # `make up` serves plain HTTP on localhost: HSTS there would pin every localhost port to HTTPS.
    response = TestClient(build_app(Settings(environment="development"))).get("/")
    assert response.status_code == 200 and "strict-transport-security" not in response.headers


@pytest.mark.usefixtures("real_aws")
def test_outside_development_the_gateway_does_not_start_without_the_service_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVICE_TOKEN", raising=False)  # the settings read the environment
    with pytest.raises(RuntimeError, match="SERVICE_TOKEN"):
        build_app(Settings(environment="production"))
