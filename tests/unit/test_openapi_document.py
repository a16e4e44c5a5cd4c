"""The public OpenAPI document (deploy/openapi.py, committed as services/gateway/openapi.json) and the gateway's
`/openapi.json` and `/docs`. That the running services answer as it says is tests/e2e/test_openapi.py's part."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deploy import openapi
from services.gateway import routing
from services.gateway.app import build_app
from services.gateway.settings import Settings

Json = dict[str, Any]


@pytest.fixture(scope="module")
def document() -> Json:
    return openapi.build()


def operations(document: Json) -> list[tuple[str, str, Json]]:
    return [(method.upper(), path, op) for path, item in document["paths"].items() for method, op in item.items()]


def test_the_committed_document_is_what_the_services_describe(document: Json) -> None:
    assert openapi.DOCUMENT_FILE.read_text() == openapi.render(document), (
        "services/gateway/openapi.json is stale: run python -m deploy.openapi")


def test_every_route_the_gateway_forwards_is_described_and_nothing_else(document: Json) -> None:
    for service in openapi.SERVICES:
        with openapi.building_apps():
            own = openapi.service_document(service)
        for path, item in own["paths"].items():
            for method in item:
                described = method in document["paths"].get(path, {})
                assert described == (routing.upstream_for(path) == service), f"{method.upper()} {path}"
    assert not [path for path in document["paths"] if path.startswith("/internal")]
    assert "get" in document["paths"]["/api/events"]  # the gateway's own


def test_every_error_is_the_envelope_and_no_validation_error_is_a_422(document: Json) -> None:
    for method, path, op in operations(document):
        assert "422" not in op["responses"], f"{method} {path}"
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")):
                assert answer["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    envelope = document["components"]["schemas"]["Error"]
    assert envelope["properties"]["error"]["required"] == ["message", "type", "param", "code"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_a_route_that_needs_a_token_says_so_and_answers_401_without_one(document: Json) -> None:
    for method, path, op in operations(document):
        if routing.is_public(method, path):
            assert op["security"] == [], path
            continue
        assert {"accessToken": []} in op["security"], f"{method} {path}"
        assert ({"apiKey": []} in op["security"]) == routing.accepts_api_keys(path), f"{method} {path}"
        assert "401" in op["responses"], f"{method} {path}"
    assert set(document["components"]["securitySchemes"]) == {"accessToken", "apiKey"}


def test_an_id_in_the_path_may_answer_404_and_a_body_may_answer_400_and_413(document: Json) -> None:
    for method, path, op in operations(document):
        if "{" in path:
            assert "404" in op["responses"], f"{method} {path}"
        if "requestBody" in op:
            assert {"400", "413"} <= set(op["responses"]), f"{method} {path}"
    upload = document["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file", "purpose"]


def test_every_reference_resolves(document: Json) -> None:
    text = json.dumps(document)
    for name in document["components"]["schemas"]:
        assert f'"#/components/schemas/{name}"' in text
    references = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert references <= set(document["components"]["schemas"])


# ---- served by the gateway, to anyone, with nothing loaded from elsewhere ----------------------------------------

@pytest.fixture(scope="module")
def gateway() -> TestClient:
    return TestClient(build_app(Settings()))  # no lifespan: these routes need no upstream


def test_the_gateway_serves_the_document_without_a_token(gateway: TestClient) -> None:
    response = gateway.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == openapi.DOCUMENT_FILE.read_bytes()


def test_the_docs_page_and_its_files_come_from_the_gateway_itself(gateway: TestClient) -> None:
    page = gateway.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http" not in page.text  # every script and style is a path on this server
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/start.js"):
        assert asset in page.text
        served = gateway.get(asset)
        assert served.status_code == 200 and len(served.content) > 0, asset
    assert "/openapi.json" in gateway.get("/docs/start.js").text


def test_the_docs_serve_only_their_own_files(gateway: TestClient) -> None:
    for name in ("index.html", "swagger-ui-bundle.js.map", "..%2F__init__.py", "oauth2-redirect.html"):
        response = gateway.get(f"/docs/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found"
