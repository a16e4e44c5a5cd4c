"""What every service's FastAPI app has: request ids, JSON logs, the error envelope, `/healthz`."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.aws import AwsClients
from shared.errors import error_response, install_error_handlers
from shared.logging import configure_logging, new_request_id, request_id_var
from shared.settings import ServiceSettings
from shared.tokens import JWKSVerifier

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


DepsBuilder = Callable[[AwsClients, Any], Awaitable[Any]]
VerifierFactory = Callable[[Any, Any], JWKSVerifier]


def _jwks_verifier(settings: ServiceSettings, _deps: Any) -> JWKSVerifier:
    return JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def create_service_app(service: str, settings: ServiceSettings, build_deps: DepsBuilder,
                       make_verifier: VerifierFactory = _jwks_verifier, **kwargs: Any) -> FastAPI:
    """A service's app: AWS clients and its handlers' dependencies built once in the lifespan, a token
    verifier on `app.state`, JSON logs, the error envelope, `/healthz`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        aws = AwsClients(settings)
        app.state.deps = await build_deps(aws, settings)
        app.state.verifier = make_verifier(settings, app.state.deps)
        try:
            yield
        finally:
            await app.state.verifier.aclose()
            await aws.close()

    configure_logging(service, settings.log_level)
    app = create_app(service, lifespan=lifespan, **kwargs)
    app.state.settings = settings
    return app


def app_deps(request: Request) -> Any:
    """FastAPI dependency: the handlers' dependencies the lifespan built."""
    return request.app.state.deps
