"""schemathesis against the whole cluster, through the gateway, from the document the gateway serves: every public
operation gets generated requests, as a signed-in user (public operations without a token), and each answer must
be no 5xx, a status the document lists for that operation, and a body that matches the schema it gives for that
status (content type included)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from playwright.sync_api import Browser, expect
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.local.cluster import Cluster
from services.gateway.openapi import DOCUMENT
from tests.e2e.browser import Screenshots, new_page
from tests.support.accounts import bearer, register
from tests.support.files import GOOD, upload
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
# Streams that end only when the access token expires: a request would hold the test until then.
ENDLESS = ("/api/events",)


@pytest.fixture(scope="module")
def signed_in(cluster: Cluster) -> dict[str, str]:
    return bearer(register(cluster.gateway_url))


# The committed document (deploy/openapi.py writes it; the gateway serves it, as the first test checks): loaded at
# collection, so each operation is a test of its own.
document = schemathesis.openapi.from_path(DOCUMENT)
api = document.exclude(path=list(ENDLESS))


def test_the_gateway_serves_the_document_to_anyone(cluster: Cluster) -> None:
    response = httpx.get(f"{cluster.gateway_url}/openapi.json")
    assert response.status_code == 200
    assert response.content == DOCUMENT.read_bytes()


def test_the_docs_page_shows_every_operation_with_nothing_from_elsewhere(cluster: Cluster, browser: Browser,
                                                                         shots: Screenshots) -> None:
    operations = sum(len(item) for item in json.loads(DOCUMENT.read_text())["paths"].values())
    elsewhere: list[str] = []
    with new_page(browser) as (_, page):  # fails on a script error or a CSP violation
        page.on("request", lambda request: None if request.url.startswith((cluster.gateway_url, "data:"))
                else elsewhere.append(request.url))
        page.goto(f"{cluster.gateway_url}/docs")
        expect(page.locator(".opblock")).to_have_count(operations)
        expect(page.get_by_text("LLM Tuner API").first).to_be_visible()
        shots.take(page, "docs")
    assert elsewhere == []


# Bounded so the run stays within a couple of minutes on two slow cores (about 900 requests): generated cases
# only, without schemathesis' coverage cases (Hypothesis' explicit phase: some 3,300 requests) or shrinking;
# derandomized so a run is reproducible (a failure names its request, and the next run sends it again).
@api.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_the_public_api_answers_as_its_document_says(case: schemathesis.Case, cluster: Cluster,
                                                    signed_in: dict[str, str]) -> None:
    # A public operation is called without a token: POST /auth/logout with one would end this user's session.
    headers: dict[str, Any] = signed_in if case.operation.definition.raw.get("security") else {}
    case.call_and_validate(base_url=cluster.gateway_url, headers=headers, checks=CHECKS, timeout=60)


# ---- what generated requests rarely reach: real objects, each route's success body checked against the document

def call(cluster: Cluster, headers: dict[str, str], operation: str, status: int, **parts: Any) -> Any:
    """One operation with these parts, validated as above; it must answer `status`. Its JSON body, if any."""
    method, path = operation.split(" ", 1)
    case = document[path][method].Case(**parts)
    response = case.call_and_validate(base_url=cluster.gateway_url, headers=headers, checks=CHECKS, timeout=60)
    assert response.status_code == status, f"{operation}: {response.status_code} {response.text[:300]}"
    content_type = response.headers.get("content-type", [""])[0]  # schemathesis' headers: lists of values
    return response.json() if content_type.startswith("application/json") else None


def test_real_objects_answer_as_the_document_says(cluster: Cluster) -> None:
    password = "correct horse battery"
    session = register(cluster.gateway_url, password=password)
    me = bearer(session)
    email = session["user"]["email"]
    call(cluster, {}, "POST /auth/login", 200, body={"email": email, "password": password})
    for operation in ("GET /auth/me", "GET /api/audit", "GET /auth/providers", "GET /.well-known/jwks.json",
                      "GET /v1/models", "GET /api/catalog", "GET /api/serving/catalog", "GET /api/deployments",
                      "GET /api/evaluations"):
        call(cluster, me, operation, 200)
    call(cluster, me, "GET /v1/models/{model_id}", 200, path_parameters={"model_id": "llm-tuner/tiny-chat"})

    key = call(cluster, me, "POST /auth/api-keys", 201, body={"name": "schema"})
    assert call(cluster, me, "GET /auth/api-keys", 200)["data"]
    program = {"Authorization": f"Bearer {key['key']}"}  # the apiKey scheme: /v1 and /api only
    call(cluster, program, "GET /v1/models", 200)
    call(cluster, program, "GET /api/catalog", 200)
    call(cluster, program, "GET /auth/me", 401)
    call(cluster, me, "DELETE /auth/api-keys/{key_id}", 200, path_parameters={"key_id": key["id"]})

    uploaded = upload(cluster.gateway_url, session, GOOD.encode())
    assert uploaded.status_code == 200, uploaded.text
    file_id = {"file_id": uploaded.json()["id"]}
    wait_for(lambda: call(cluster, me, "GET /v1/files/{file_id}", 200, path_parameters=file_id)["status"],
             lambda status: status == "processed", "the file validated", timeout_s=60)
    call(cluster, me, "GET /v1/files", 200)
    call(cluster, me, "GET /v1/files/{file_id}/content", 200, path_parameters=file_id)
    call(cluster, me, "GET /api/files/{file_id}/report", 200, path_parameters=file_id)
    call(cluster, me, "GET /api/files/{file_id}/preview", 200, path_parameters=file_id)

    job_body = {"model": "llm-tuner/tiny-chat", "training_file": file_id["file_id"]}
    call(cluster, me, "POST /api/estimates", 200, body=job_body)
    job = {"job_id": call(cluster, me, "POST /v1/fine_tuning/jobs", 200, body=job_body)["id"]}
    call(cluster, me, "POST /v1/fine_tuning/jobs/{job_id}/cancel", 200, path_parameters=job)
    for operation in ("GET /v1/fine_tuning/jobs/{job_id}", "GET /v1/fine_tuning/jobs/{job_id}/events",
                      "GET /v1/fine_tuning/jobs/{job_id}/checkpoints", "GET /api/jobs/{job_id}/artifacts",
                      "GET /api/jobs/{job_id}/metrics", "GET /api/jobs/{job_id}/logs"):
        call(cluster, me, operation, 200, path_parameters=job)
    assert call(cluster, me, "GET /v1/fine_tuning/jobs", 200)["data"]
    call(cluster, me, "DELETE /v1/files/{file_id}", 200, path_parameters=file_id)

    direct = call(cluster, me, "POST /api/uploads", 200, body={"filename": "big.jsonl", "purpose": "fine-tune",
                                                               "bytes": 1024})
    call(cluster, me, "DELETE /api/uploads/{file_id}", 200, path_parameters={"file_id": direct["id"]})
