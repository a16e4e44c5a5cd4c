"""schemathesis against the whole cluster, through the gateway, from the document the gateway serves: every public
operation gets generated requests, as a signed-in user (public operations without a token), and each answer must
be no 5xx, a status the document lists for that operation, and a body that matches the schema it gives for that
status (content type included)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from deploy.local.cluster import Cluster
from services.gateway.openapi import DOCUMENT
from tests.support.accounts import bearer, register

pytestmark = pytest.mark.e2e

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
# Streams that end only when the access token expires: a request would hold the test until then.
ENDLESS = ("/api/events",)


@pytest.fixture(scope="module")
def signed_in(cluster: Cluster) -> dict[str, str]:
    return bearer(register(cluster.gateway_url))


# The committed document (deploy/openapi.py writes it; the gateway serves it, as the first test checks): loaded at
# collection, so each operation is a test of its own.
api = schemathesis.openapi.from_path(DOCUMENT).exclude(path=list(ENDLESS))


def test_the_gateway_serves_the_document_to_anyone(cluster: Cluster) -> None:
    response = httpx.get(f"{cluster.gateway_url}/openapi.json")
    assert response.status_code == 200
    assert response.content == DOCUMENT.read_bytes()


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
