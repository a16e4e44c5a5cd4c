"""The HTTP edge of every service (shared/errors.py, shared/web.py): AWS throttling a request past botocore's
retries answers 503 with Retry-After in the error envelope (the client did nothing wrong and may retry); any other
unexpected exception stays a 500 that says nothing of its cause."""

from __future__ import annotations

import httpx
import pytest
from botocore.exceptions import ClientError
from fastapi import FastAPI

from shared.body_limit import BodyLimits
from shared.web import create_app


def _app() -> FastAPI:
    app = create_app("edge-test", limits=BodyLimits(1 << 20, {}), guard_internal=False)

    @app.get("/throttled")
    async def throttled() -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
                          "PutItem")

    @app.get("/refused")
    async def refused() -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "PutItem")

    @app.get("/broken")
    async def broken() -> None:
        raise ValueError("secret detail")

    return app


@pytest.mark.parametrize(("path", "status"), [("/throttled", 503), ("/refused", 500), ("/broken", 500)])
async def test_throttling_is_a_503_to_retry_and_the_rest_a_500(path: str, status: int) -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        response = await client.get(path)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    assert "secret detail" not in response.text and "AccessDenied" not in response.text
    if status == 503:
        assert error["code"] == "throttled" and response.headers["retry-after"] == "1"
    else:
        assert "retry-after" not in response.headers
