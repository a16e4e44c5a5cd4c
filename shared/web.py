"""What every service's FastAPI app has: request ids, JSON logs, the error envelope, `/healthz`, request body
limits (shared/body_limit.py) and, for a service, the service credential on `/internal` (shared/service_token.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from pydantic import SecretStr
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.aws import AwsClients
from shared.body_limit import BodyLimitMiddleware, BodyLimits
from shared.errors import install_error_handlers, unexpected_error_response
from shared.logging import configure_logging, new_request_id, request_id_var
from shared.service_token import ServiceTokenMiddleware, require_service_token
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
        except Exception as exc:
            if started_response:
                log.exception("unhandled error", extra={"path": scope["path"]})
                raise
            await unexpected_error_response(exc)(scope, receive, send_with_id)
        finally:
            if scope["path"] != "/healthz":
                log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                           "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
            request_id_var.reset(token)


def body_limits(settings: ServiceSettings) -> BodyLimits:
    return BodyLimits(settings.max_request_body_bytes, settings.route_body_limits())


def create_app(service: str, lifespan: Any = None, *, limits: BodyLimits, guard_internal: bool = True,
               internal_token: SecretStr | None = None, **kwargs: Any) -> FastAPI:
    """With `guard_internal`, `/internal` answers only requests that show `internal_token` (shared/service_token.py);
    the gateway, which serves no `/internal`, goes without."""
    app = FastAPI(title=f"LLM Tuner {service}", lifespan=lifespan, **kwargs)
    install_error_handlers(app)
    # The last added runs first: request ids and logs see every answer, the 401s and 413s included.
    app.add_middleware(BodyLimitMiddleware, limits=limits)
    if guard_internal:
        app.add_middleware(ServiceTokenMiddleware, token=internal_token)
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
    verifier on `app.state`, JSON logs, the error envelope, `/healthz`, body limits from its settings, and
    `/internal` for the platform's services only."""
    require_service_token(settings)

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
    app = create_app(service, lifespan=lifespan, limits=body_limits(settings), internal_token=settings.service_token,
                     **kwargs)
    app.state.settings = settings
    return app


def app_deps(request: Request) -> Any:
    """FastAPI dependency: the handlers' dependencies the lifespan built."""
    return request.app.state.deps
