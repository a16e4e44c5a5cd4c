"""Streaming reverse proxy: request and response bodies pass through in chunks, never buffered whole."""

from __future__ import annotations

import http.cookiejar
import logging
from urllib.parse import quote

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shared.errors import error_response
from shared.logging import current_request_id

log = logging.getLogger(__name__)

# What a path segment may hold unencoded (RFC 3986 pchar, less `%`), and `/`.
PATH_CHARACTERS = "/:@!$&'()*+,;="
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host"})


def refuse_all_cookies() -> http.cookiejar.CookieJar:
    """For the upstream client: a proxy's client must not keep cookies. httpx's default jar would store a
    Set-Cookie from one person's response (auth's refresh cookie) and send it with everybody's requests."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _forward_headers(request: Request, authorization: str | None = None) -> list[tuple[str, str]]:
    replaced = {"x-request-id"} | ({"authorization"} if authorization is not None else set())
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | replaced]
    if authorization is not None:
        headers.append(("authorization", authorization))
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    headers += [("x-request-id", current_request_id() or ""),
                ("x-forwarded-for", f"{prior}, {client}" if prior else client),
                ("x-forwarded-proto", request.headers.get("x-forwarded-proto", request.url.scheme)),
                ("x-forwarded-host", request.headers.get("x-forwarded-host", request.headers.get("host", "")))]
    return headers


async def forward(client: httpx.AsyncClient, base_url: str, request: Request, *,
                  authorization: str | None = None) -> Response:
    """`authorization` replaces the client's header (an API key traded for an access token)."""
    # The path as Starlette decoded it, encoded again: httpx refuses a control character in a URL (a 500).
    url = httpx.URL(base_url + quote(request.url.path, safe=PATH_CHARACTERS), query=request.url.query.encode())
    upstream_request = client.build_request(request.method, url, headers=_forward_headers(request, authorization),
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
    response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                 background=BackgroundTask(upstream.aclose))
    # Raw pairs, not a dict: a response may carry several headers of one name (Set-Cookie above all).
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in upstream.headers.multi_items()
        if k.lower() not in HOP_BY_HOP | {"x-request-id"}]
    return response
