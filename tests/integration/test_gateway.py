"""The gateway in front of the real services over HTTP: routing, 401 before proxying, streaming, request ids."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.gateway.app import build_app
from services.gateway.settings import Settings
from tests.support.accounts import bearer, register
from tests.support.servers import serve


@pytest.fixture(scope="module")
def gateway_url(auth_url: str, files_url: str, training_url: str) -> Iterator[str]:
    settings = Settings(auth_url=auth_url, files_url=files_url, training_url=training_url,
                        auth_jwks_url=f"{auth_url}/.well-known/jwks.json")
    with serve(build_app(settings)) as url:
        yield url


def test_register_login_and_me_through_the_gateway(gateway_url: str) -> None:
    session = register(gateway_url)
    me = httpx.get(f"{gateway_url}/auth/me", headers=bearer(session))
    assert me.status_code == 200 and me.json()["id"] == session["user"]["id"]


def test_missing_or_bad_token_is_refused_before_proxying(gateway_url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic abc"}):
        response = httpx.get(f"{gateway_url}/v1/fine_tuning/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_routes_answer_404_with_the_envelope(gateway_url: str) -> None:
    for path in ("/nope", "/v2/files", "/api/unknown", "/v1/filesystem"):
        response = httpx.get(f"{gateway_url}{path}")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_upload_streams_through_and_keeps_the_request_id(gateway_url: str) -> None:
    session = register(gateway_url)
    line = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    content = ((line + "\n") * 20).encode()

    def body() -> Iterator[bytes]:  # a streamed (chunked) request body
        boundary = "x-boundary"
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'.encode()
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
               "Content-Type: application/jsonl\r\n\r\n").encode()
        for i in range(0, len(content), 97):
            yield content[i:i + 97]
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(f"{gateway_url}/v1/files", content=body(),
                          headers={**bearer(session), "content-type": "multipart/form-data; boundary=x-boundary",
                                   "x-request-id": "req_gateway_test_1"})
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(content)
    assert response.headers["x-request-id"] == "req_gateway_test_1"


def test_catalog_lists_the_demo_model(gateway_url: str) -> None:
    session = register(gateway_url)
    catalog = httpx.get(f"{gateway_url}/api/catalog", headers=bearer(session)).json()
    assert "llm-tuner/tiny-chat" in [m["id"] for m in catalog["models"]]
    assert "ml.g5.large" not in [t["id"] for t in catalog["instance_types"]]


def test_home_page_is_served(gateway_url: str) -> None:
    response = httpx.get(gateway_url + "/")
    assert response.status_code == 200 and "LLM Tuner" in response.text


def test_an_unreachable_service_is_a_502_envelope(auth_url: str) -> None:
    settings = Settings(auth_url=auth_url, files_url="http://127.0.0.1:9", training_url="http://127.0.0.1:9",
                        auth_jwks_url=f"{auth_url}/.well-known/jwks.json")
    with serve(build_app(settings)) as url:
        session = register(url)
        response = httpx.get(f"{url}/v1/files", headers=bearer(session))
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unavailable"


def test_internal_routes_are_never_proxied(gateway_url: str) -> None:
    session = register(gateway_url)
    response = httpx.get(f"{gateway_url}/internal/revocations", params={"since": 0}, headers=bearer(session))
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    # Sent as is (httpx would resolve the dots itself): the upstream URL must not resolve them either.
    host, port = gateway_url.removeprefix("http://").split(":")
    for path in ("/auth/../internal/revocations?since=0", "/auth/%2e%2e/internal/revocations?since=0"):
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        connection.request("GET", path, headers=bearer(session))
        raw = connection.getresponse()
        assert raw.status == 404, path
        assert json.loads(raw.read())["error"]["code"] == "not_found"
        connection.close()


def test_auths_internal_routes_answer_only_the_service_credential(auth_url: str, service_token: str) -> None:
    """The network is not the boundary: a task that reaches auth directly still needs SERVICE_TOKEN."""
    for headers in ({}, {"X-Service-Token": "a-guess"}, {"X-Service-Token": service_token[:-1]}):
        refused = httpx.get(f"{auth_url}/internal/revocations", params={"since": 0}, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_service_token"
    refused = httpx.post(f"{auth_url}/internal/api-keys/exchange", json={"key": "sk-" + "a" * 48})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_service_token"
    allowed = httpx.get(f"{auth_url}/internal/revocations", params={"since": 0},
                        headers={"X-Service-Token": service_token})
    assert allowed.status_code == 200 and "sessions" in allowed.json()


def test_the_gateway_keeps_no_cookie_of_one_client_for_another(gateway_url: str) -> None:
    first = httpx.post(f"{gateway_url}/auth/register",
                       json={"email": f"cookie-{uuid.uuid4().hex[:8]}@example.com", "password": "a long password"})
    assert first.status_code == 201 and first.cookies  # the refresh cookie went to that client only
    second = register(gateway_url)
    # Signing out with a token and no cookie needs no CSRF token; someone else's cookie would demand one.
    response = httpx.post(f"{gateway_url}/auth/logout", headers=bearer(second))
    assert response.status_code == 204, response.text


def test_a_browser_session_renews_and_ends_through_the_gateway(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url) as browser:
        signed_up = browser.post("/auth/register", json={"email": f"gw-{uuid.uuid4().hex[:8]}@example.com",
                                                         "password": "a long password"})
        assert signed_up.status_code == 201
        csrf = browser.cookies["llmt_csrf"]
        renewed = browser.post("/auth/refresh", headers={"x-csrf-token": csrf})
        assert renewed.status_code == 200, renewed.text
        assert len(renewed.headers.get_list("set-cookie")) == 2  # both cookies pass through, not merged
        csrf = browser.cookies["llmt_csrf"]  # a new session grant brings a new CSRF token
        assert browser.post("/auth/logout", headers={"x-csrf-token": csrf}).status_code == 204
        assert browser.post("/auth/refresh", headers={"x-csrf-token": csrf}).status_code in (401, 403)
