"""Streaming reverse proxy: request and response bodies pass through in chunks, never buffered whole; a small
response (its length known and short) is read at once and sent as one, which spares a request the cost of a
stream (a task watching for the client's disconnect, a chunk at a time) where there is nothing to stream."""

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
_NOT_FORWARDED = HOP_BY_HOP | {"x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}
_NOT_FORWARDED_WITH_AUTHORIZATION = _NOT_FORWARDED | {"authorization"}
_NOT_RETURNED = HOP_BY_HOP | {"x-request-id"}
# A response whose Content-Length is at most this is read whole and sent as one (a page of JSON, an error).
SMALL_RESPONSE_BYTES = 256 * 1024


def refuse_all_cookies() -> http.cookiejar.CookieJar:
    """For the upstream client: a proxy's client must not keep cookies. httpx's default jar would store a
    Set-Cookie from one person's response (auth's refresh cookie) and send it with everybody's requests."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _forward_headers(request: Request, authorization: str | None = None) -> list[tuple[bytes, bytes]]:
    """The client's headers as raw pairs (what httpx sends as they are), less the hop-by-hop ones, with the
    gateway's own: the request id, the client's address appended to X-Forwarded-For, the scheme and host."""
    dropped = _NOT_FORWARDED if authorization is None else _NOT_FORWARDED_WITH_AUTHORIZATION
    raw = request.scope["headers"]  # lower-case names already (ASGI)
    headers = [(k, v) for k, v in raw if k.decode("latin-1") not in dropped]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode("latin-1")))
    client = request.client.host if request.client else ""
    prior = request.headers.get("x-forwarded-for")
    headers += [(b"x-request-id", (current_request_id() or "").encode("latin-1")),
                (b"x-forwarded-for", (f"{prior}, {client}" if prior else client).encode("latin-1")),
                (b"x-forwarded-proto", request.headers.get("x-forwarded-proto", request.url.scheme).encode("latin-1")),
                (b"x-forwarded-host",
                 request.headers.get("x-forwarded-host", request.headers.get("host", "")).encode("latin-1"))]
    return headers


def _has_body(request: Request) -> bool:
    """Whether the client sends a body: without one, none is sent on (an empty stream would go upstream as a
    chunked body of nothing, which the service must still parse)."""
    headers = request.headers
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("0", "")


async def forward(client: httpx.AsyncClient, base_url: str, request: Request, *,
                  authorization: str | None = None) -> Response:
    """`authorization` replaces the client's header (an API key traded for an access token)."""
    # The path as the server decoded it, encoded again: httpx refuses a control character in a URL (a 500), and
    # `request.url.path` is half-encoded (`?` and `#` are, `%` is not), so it cannot be encoded again.
    path = quote(request.scope["path"], safe=PATH_CHARACTERS)
    url = httpx.URL(base_url + path, query=request.url.query.encode())
    upstream_request = client.build_request(request.method, url, headers=_forward_headers(request, authorization),
                                            content=request.stream() if _has_body(request) else None)
    try:
        upstream = await client.send(upstream_request, stream=True)
    except httpx.TimeoutException:
        return error_response(504, "The upstream service did not answer in time.", "server_error",
                              code="upstream_timeout")
    except httpx.TransportError as exc:
        log.warning("upstream unavailable", extra={"upstream": base_url, "error": repr(exc)})
        return error_response(502, "The upstream service is unavailable; try again shortly.", "server_error",
                              code="upstream_unavailable")
    # Raw pairs, not a dict: a response may carry several headers of one name (Set-Cookie above all).
    raw_headers = [(k.lower(), v) for k, v in upstream.headers.raw if k.lower().decode("latin-1") not in _NOT_RETURNED]
    length = upstream.headers.get("content-length", "")
    if length.isdigit() and int(length) <= SMALL_RESPONSE_BYTES:
        try:  # raw: the bytes as the service sent them, matching its Content-Length and Content-Encoding
            body = b"".join([chunk async for chunk in upstream.aiter_raw()])
        except httpx.TransportError as exc:
            log.warning("upstream response cut short", extra={"upstream": base_url, "error": repr(exc)})
            return error_response(502, "The upstream service is unavailable; try again shortly.", "server_error",
                                  code="upstream_unavailable")
        finally:
            await upstream.aclose()
        response = Response(body, status_code=upstream.status_code)
    else:
        response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                                     background=BackgroundTask(upstream.aclose))
    response.raw_headers = raw_headers
    return response
