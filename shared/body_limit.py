"""Request body limits: a body over its route's limit is refused with 413 `request_too_large` before it is
held, from its Content-Length when it declares one, else as its chunks arrive (a chunked body has none).

The check sits in front of every route, so it runs before anything parses or buffers the body (FastAPI reads a
JSON body whole before the route's first line; the gateway's proxy streams it upstream). Past the limit the
client gets the 413 at once (with `Connection: close`), and the app reads a disconnect: whatever it does next is
not sent. uvicorn stops reading the socket while a little of the body waits unread, and drops what arrives
after the response, so memory stays flat whatever the client sends.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response

log = logging.getLogger(__name__)

# The routes whose bodies may be larger than MAX_REQUEST_BODY_BYTES, named once for the service that serves them and
# for the gateway in front of it. An upload's body is its file (files holds it to `max_file_bytes` as it streams);
# completing a direct upload lists up to 10,000 parts, each with its ETag; a chat carries its whole conversation.
UPLOAD_COMPLETE_BYTES = 4 * 1024**2


def upload_routes(max_file_bytes: int) -> dict[tuple[str, str], int]:
    return {("POST", "/v1/files"): max_file_bytes + 1024**2,
            ("POST", "/api/uploads/{file_id}/complete"): UPLOAD_COMPLETE_BYTES}


def chat_routes(max_chat_request_bytes: int) -> dict[tuple[str, str], int]:
    return {("POST", "/v1/chat/completions"): max_chat_request_bytes}


@dataclass(frozen=True)
class BodyLimits:
    """`default` bytes for every request; `routes` maps (method, route path) to a route's own limit."""

    default: int
    routes: Mapping[tuple[str, str], int] = field(default_factory=dict)
    _compiled: tuple[tuple[str, re.Pattern[str], int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Starlette's own route matcher: each `{name}` stands for one path segment, as the routes match it.
        compiled = tuple((method.upper(), compile_path(path)[0], limit)
                         for (method, path), limit in self.routes.items())
        object.__setattr__(self, "_compiled", compiled)

    def for_request(self, method: str, path: str) -> int:
        for route_method, pattern, limit in self._compiled:
            if route_method == method and pattern.match(path):
                return limit
        return self.default


async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    # `Connection: close`: the rest of the body is not wanted; the connection is not reused after it.
    response = error_response(413, f"The request body is larger than this route's limit of {limit} bytes.",
                              "invalid_request_error", None, "request_too_large", {"Connection": "close"})
    await response(scope, receive, send)


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else None


class BodyLimitMiddleware:
    """Pure ASGI: counts the body as the app receives it, never buffers it."""

    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_request(scope["method"], scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _refuse(limit, scope, receive, send)
            return
        received = 0
        cut = answered = started = False

        async def limited_receive() -> Message:
            nonlocal received, cut, answered
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    cut = True
                    if not started:  # else the app's own response goes on; it just gets no more body
                        answered = True
                        await _refuse(limit, scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the client has its 413; what the app makes of the cut body is not sent
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:
            if not answered:
                raise
            # The app failed on the body it was refused (a disconnect mid-read): expected, already answered.
            log.debug("app failed after its request body was refused", extra={"error": repr(exc)})
