"""Streaming reverse proxy: request and response bodies pass through in chunks, never buffered whole."""

from __future__ import annotations

import logging

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shared.errors import error_response
from shared.logging import current_request_id

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host"})


def _forward_headers(request: Request) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | {"x-request-id"}]
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    headers += [("x-request-id", current_request_id() or ""),
                ("x-forwarded-for", f"{prior}, {client}" if prior else client),
                ("x-forwarded-proto", request.headers.get("x-forwarded-proto", request.url.scheme)),
                ("x-forwarded-host", request.headers.get("x-forwarded-host", request.headers.get("host", "")))]
    return headers


async def forward(client: httpx.AsyncClient, base_url: str, request: Request) -> Response:
    url = httpx.URL(base_url + request.url.path, query=request.url.query.encode())
    upstream_request = client.build_request(request.method, url, headers=_forward_headers(request),
                                            content=request.stream())
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException:
        return error_response(504, "The upstream service did not answer in time.", "server_error",
                              code="upstream_timeout")
    except httpx.TransportError as exc:
        log.warning("upstream unavailable", extra={"upstream": base_url, "error": repr(exc)})
        return error_response(502, "The upstream service is unavailable; try again shortly.", "server_error",
                              code="upstream_unavailable")
    headers = {k: v for k, v in upstream.headers.items()
               if k.lower() not in HOP_BY_HOP | {"content-length", "x-request-id"}}
    if "content-length" in upstream.headers:
        headers["content-length"] = upstream.headers["content-length"]
    return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=headers,
                             background=BackgroundTask(upstream.aclose))
