"""services/gateway/proxy.py: what the service behind the gateway receives, and what the client gets back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.gateway import proxy

BIG = b"x" * (proxy.SMALL_RESPONSE_BYTES + 1)


async def _echo(request: Request) -> Response:
    """The upstream: says what it received; `/big` answers more than a small response."""
    body = await request.body()
    if request.url.path == "/big":
        return Response(BIG, media_type="application/octet-stream")
    seen = {"x-forwarded-for": request.headers.getlist("x-forwarded-for"),
            "transfer-encoding": request.headers.get("transfer-encoding"),
            "authorization": request.headers.getlist("authorization"), "body": body.decode()}
    response = Response(json.dumps(seen), media_type="application/json")
    response.raw_headers += [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    return response


def _call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    upstream = httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=[
        Route("/{p:path}", _echo, methods=["GET", "POST"])])))

    async def gateway_route(request: Request) -> Response:
        return await proxy.forward(upstream, "http://upstream", request, authorization="Bearer traded")

    gateway = Starlette(routes=[Route("/{p:path}", gateway_route, methods=["GET", "POST"])])

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=gateway, client=("203.0.113.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.request(method, path, **kwargs)
            await upstream.aclose()
            return response

    return asyncio.run(call())


def test_the_service_sees_one_forwarded_for_ending_with_the_client_and_one_authorization() -> None:
    response = _call("GET", "/v1/x", headers={"X-Forwarded-For": "198.51.100.1", "Authorization": "Bearer key"})
    seen = response.json()
    assert seen["x-forwarded-for"] == ["198.51.100.1, 203.0.113.9"]  # a spoofed first hop is never alone
    assert seen["authorization"] == ["Bearer traded"]
    assert seen["transfer-encoding"] is None and seen["body"] == ""  # no body: none sent on


def test_a_body_passes_through_and_every_set_cookie_comes_back() -> None:
    response = _call("POST", "/v1/x", content=b'{"a": 1}')
    assert response.json()["body"] == '{"a": 1}'
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["content-length"] == str(len(response.content))


def test_a_big_response_streams_whole() -> None:
    response = _call("GET", "/big")
    assert response.content == BIG and response.headers["content-length"] == str(len(BIG))
