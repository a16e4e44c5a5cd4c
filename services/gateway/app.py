"""The gateway: the one public port. Routes /auth, /v1 and /api to the services, refuses a missing, bad or
revoked token with 401 before proxying, trades a program's API key for an access token, adds the request
id, streams bodies both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

from services.gateway import proxy, routes
from services.gateway.apikeys import InvalidApiKey, is_api_key
from services.gateway.bootstrap import build_deps, revocation_feed
from services.gateway.handlers import Deps
from services.gateway.settings import Settings
from shared.aws import AwsClients
from shared.errors import NotFound
from shared.logging import configure_logging
from shared.tokens import JWKSVerifier, bearer_token
from shared.web import create_app

STATIC = Path(__file__).parent / "static"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_read_timeout_s, connect=settings.upstream_connect_timeout_s),
        limits=httpx.Limits(max_connections=settings.max_upstream_connections,
                            max_keepalive_connections=settings.max_upstream_connections),
        follow_redirects=False, cookies=proxy.refuse_all_cookies())
    aws = AwsClients(settings)
    try:
        deps = app.state.deps = build_deps(settings, app.state.http)
        app.state.verifier = JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer,
                                          audience=settings.jwt_audience, http=app.state.http,
                                          revoked=deps.revocations.is_revoked)
        app.state.upstreams = routes.base_urls(settings)
        async with revocation_feed(aws, settings, deps):
            yield
    finally:
        await aws.close()
        await app.state.http.aclose()


async def _authorize(request: Request) -> str | None:
    """Verify the caller's token (401 before anything is proxied); for an API key, the access token it was
    traded for, as the Authorization header to forward in its place."""
    token = bearer_token(request)
    forwarded = None
    if is_api_key(token):
        if not routes.accepts_api_keys(request.url.path):
            raise InvalidApiKey("API keys are accepted on /v1 and /api only; sign in for this.")
        deps: Deps = request.app.state.deps
        token = await deps.api_keys.access_token(token)
        forwarded = f"Bearer {token}"
    await request.app.state.verifier.verify(token)
    return forwarded


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging("gateway", settings.log_level)
    app = create_app("gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings

    @app.get("/", include_in_schema=False)
    async def home() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def route(path: str, request: Request) -> Response:
        service = routes.upstream_for(request.url.path)
        if service is None:
            raise NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
        authorization = None
        if not routes.is_public(request.method, request.url.path):
            authorization = await _authorize(request)
        return await proxy.forward(request.app.state.http, request.app.state.upstreams[service], request,
                                   authorization=authorization)

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5000), log_config=None)


if __name__ == "__main__":
    main()
