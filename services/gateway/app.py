"""The gateway: the one public port. Routes /auth, /v1 and /api to the services, refuses a missing or bad
token with 401 before proxying, adds the request id, streams bodies both ways."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

from services.gateway import proxy, routes
from services.gateway.settings import Settings
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
        follow_redirects=False)
    app.state.verifier = JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer,
                                      audience=settings.jwt_audience, http=app.state.http)
    app.state.upstreams = routes.base_urls(settings)
    try:
        yield
    finally:
        await app.state.http.aclose()


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
        if not routes.is_public(request.method, request.url.path):
            await request.app.state.verifier.verify(bearer_token(request))
        return await proxy.forward(request.app.state.http, request.app.state.upstreams[service], request)

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5000), log_config=None)


if __name__ == "__main__":
    main()
