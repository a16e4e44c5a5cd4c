"""What every service's FastAPI app has: request ids, JSON logs, the error envelope, `/healthz`."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response, install_error_handlers
from shared.logging import new_request_id, request_id_var

REQUEST_ID_HEADER = "x-request-id"
log = logging.getLogger("http")


def _valid_request_id(value: str | None) -> bool:
    return bool(value) and len(value or "") <= 128 and all(c.isalnum() or c in "-_.:" for c in value or "")


class RequestContextMiddleware:
    """Pure ASGI (no body buffering, so streamed uploads and downloads pass straight through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = incoming if incoming and _valid_request_id(incoming) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"path": scope["path"]})
            if started_response:
                raise
            response = error_response(500, "The server had an error while processing your request.",
                                      "server_error")
            await response(scope, receive, send_with_id)
        finally:
            if scope["path"] != "/healthz":
                log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                           "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
            request_id_var.reset(token)


def create_app(service: str, lifespan: Any = None, **kwargs: Any) -> FastAPI:
    app = FastAPI(title=f"LLM Tuner {service}", lifespan=lifespan, **kwargs)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    return app
