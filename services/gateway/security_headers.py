"""The headers that keep browsers strict with the web app: its Content-Security-Policy and page headers, and
HSTS on every answer outside development (where the gateway is served over HTTPS)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.settings import Settings

HSTS = "max-age=31536000; includeSubDomains"


def upload_origin(settings: Settings) -> str:
    """Where browsers PUT direct-upload parts: UPLOAD_ORIGIN, else the S3 endpoint the services use (the
    embedded or a compatible S3), else the bucket's own regional origin, as presigned URLs name it."""
    endpoint = settings.upload_origin or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    parts = urlsplit(endpoint) if endpoint else None
    if parts and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return f"https://{settings.bucket}.s3.{settings.aws_default_region}.amazonaws.com"


def content_security_policy(settings: Settings) -> str:
    """The web app's CSP: its own scripts and styles only (no inline code), and connections to itself and to
    where direct uploads PUT their parts (presigned S3 URLs) -- that one bucket, not any."""
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' {upload_origin(settings)}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")


# Every page's headers but its CSP. no-cache: revalidate (ETag) on every load, so a deploy's new files are picked
# up at once.
PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache", "Referrer-Policy": "same-origin",
                "X-Frame-Options": "DENY"}


def page_headers(settings: Settings) -> dict[str, str]:
    return {"Content-Security-Policy": content_security_policy(settings), **PAGE_HEADERS}


class StrictTransportSecurity:
    """Pure ASGI: adds HSTS to every response, errors included. Only outside development: a local
    `make up` serves plain HTTP on localhost, and HSTS there would pin every localhost port to HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"strict-transport-security", HSTS.encode())]
            await send(message)

        await self.app(scope, receive, send_with_hsts)
