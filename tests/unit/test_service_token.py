"""The service credential: `/internal` answers only a request showing SERVICE_TOKEN, in every service; a
deployment does not start without a real token; the gateway shows it on its calls to auth."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.gateway.api_key_exchange import InvalidApiKey
from services.gateway.auth_client import AuthClient, AuthUnavailable
from shared.body_limit import BodyLimits
from shared.service_token import HEADER, ServiceTokenMissing, require_service_token
from shared.settings import ServiceSettings
from shared.web import create_app, create_service_app

TOKEN = "kV9q2-8fJ3x-mP0zL7w-real-service-token"


def _app(token: str | None) -> FastAPI:
    app = create_app("test", limits=BodyLimits(1024 * 1024), internal_token=SecretStr(token) if token else None)

    @app.get("/internal/revocations")
    async def internal() -> dict[str, bool]:
        return {"internal": True}

    @app.get("/internal")
    async def internal_root() -> dict[str, bool]:
        return {"internal": True}

    @app.get("/internals")  # a name that only starts like it is not internal
    async def public() -> dict[str, bool]:
        return {"internal": False}

    return app


@pytest.mark.parametrize("headers", [{}, {HEADER: "wrong"}, {HEADER: TOKEN[:-1]}, {HEADER: TOKEN + "x"},
                                     {"Authorization": f"Bearer {TOKEN}"}])
@pytest.mark.parametrize("path", ["/internal/revocations", "/internal", "/%69nternal/revocations"])
def test_internal_routes_refuse_a_request_without_the_right_token(headers: dict[str, str], path: str) -> None:
    response = TestClient(_app(TOKEN)).get(path, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == {"message": "This endpoint is for the platform's services only.",
                                        "type": "authentication_error", "param": None,
                                        "code": "invalid_service_token"}


def test_internal_routes_answer_the_right_token_and_other_routes_need_none() -> None:
    client = TestClient(_app(TOKEN))
    assert client.get("/internal/revocations", headers={HEADER: TOKEN}).json() == {"internal": True}
    assert client.get("/internals").json() == {"internal": False}


def test_without_a_token_configured_nothing_reaches_internal() -> None:
    client = TestClient(_app(None))
    for headers in ({}, {HEADER: ""}, {HEADER: "None"}):
        assert client.get("/internal/revocations", headers=headers).status_code == 401


def test_outside_development_a_service_does_not_start_without_a_real_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERVICE_TOKEN", raising=False)  # the settings read the environment
    with pytest.raises(ServiceTokenMissing, match="SERVICE_TOKEN"):
        require_service_token(ServiceSettings(environment="production"))
    with pytest.raises(ValueError, match="SERVICE_TOKEN holds a placeholder"):
        ServiceSettings(environment="production", service_token=SecretStr("change-me"))
    require_service_token(ServiceSettings(environment="production", service_token=SecretStr(TOKEN)))
    require_service_token(ServiceSettings(environment="development"))  # /internal then answers nobody

    async def build_deps(_aws: Any, _settings: Any) -> None:
        return None

    with pytest.raises(ServiceTokenMissing):
        create_service_app("test", ServiceSettings(environment="staging"), build_deps)


def _service_apps() -> dict[str, FastAPI]:
    from services.auth.app import build_app as auth_app
    from services.auth.settings import Settings as AuthSettings
    from services.files.app import build_app as files_app
    from services.files.settings import Settings as FilesSettings
    from services.inference.app import build_app as inference_app
    from services.inference.settings import Settings as InferenceSettings
    from services.training.app import build_app as training_app
    from services.training.settings import Settings as TrainingSettings

    token = SecretStr(TOKEN)
    return {"auth": auth_app(AuthSettings(service_token=token)), "files": files_app(FilesSettings(service_token=token)),
            "training": training_app(TrainingSettings(service_token=token)),
            "inference": inference_app(InferenceSettings(service_token=token))}


def test_every_service_guards_its_internal_routes() -> None:
    for name, app in _service_apps().items():
        client = TestClient(app)  # no lifespan: the guard answers before any route or dependency
        response = client.get("/internal/revocations", params={"since": 0})
        assert response.status_code == 401, name
        assert response.json()["error"]["code"] == "invalid_service_token", name


async def test_the_gateway_shows_the_token_on_each_call_to_auth() -> None:
    seen: list[httpx.Request] = []

    def auth(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/internal/revocations":
            return httpx.Response(200, json={"sessions": []})
        return httpx.Response(200, json={"access_token": "jwt", "expires_in": 300, "user_id": "u", "key_id": "k"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(auth)) as http:
        client = AuthClient(http, "http://auth", SecretStr(TOKEN))
        await client.revoked_sessions(since=0)
        await client.exchange_api_key("sk-" + "a" * 48)
    assert [r.headers.get(HEADER) for r in seen] == [TOKEN, TOKEN]


async def test_a_refused_service_token_is_the_platforms_fault_not_the_api_keys() -> None:
    """A gateway and an auth that do not share SERVICE_TOKEN: a 503 (and an error in the log), never "Incorrect
    API key" for a key that is fine."""

    def auth(request: httpx.Request) -> httpx.Response:
        if request.headers.get(HEADER) != TOKEN:
            return httpx.Response(401, json={"error": {"message": "no", "type": "authentication_error",
                                                       "param": None, "code": "invalid_service_token"}})
        return httpx.Response(401, json={"error": {"message": "Incorrect API key provided.",
                                                   "type": "authentication_error", "param": None,
                                                   "code": "invalid_api_key"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(auth)) as http:
        with pytest.raises(AuthUnavailable):
            await AuthClient(http, "http://auth", SecretStr("another-deployments-token")).exchange_api_key("sk-a")
        with pytest.raises(InvalidApiKey):
            await AuthClient(http, "http://auth", SecretStr(TOKEN)).exchange_api_key("sk-a")
