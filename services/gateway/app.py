"""The gateway: the one public port. Routes /auth, /v1 and /api to the services, refuses a missing, bad or
revoked token with 401 before proxying, trades a program's API key for an access token, adds the request
id, streams bodies both ways. It also serves the web app (static files, no build step) and its live
updates (`GET /api/events`, Server-Sent Events: services/gateway/live.py)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from services.gateway import browser_events, live, openapi, proxy, routing
from services.gateway.api_key_exchange import InvalidApiKey, is_api_key
from services.gateway.bootstrap import build_deps, live_feed, revocation_feed
from services.gateway.deps import Deps
from services.gateway.security_headers import StrictTransportSecurity, page_headers
from services.gateway.settings import Settings
from shared.aws import AwsClients
from shared.errors import NotFound
from shared.logging import configure_logging
from shared.service_token import require_service_token
from shared.tokens import Principal, bearer_token
from shared.web import body_limits, create_app

STATIC = Path(__file__).parent / "static"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# An idle upstream connection is dropped here well before the services' uvicorn closes its side (its
# timeout_keep_alive, 5 s): reusing one just as the server closes it fails the request with a ReadError (a 502
# seen under load), and a proxied upload cannot be retried once its body has been streamed.
UPSTREAM_KEEPALIVE_S = 2.0


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    app.state.http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_read_timeout_s, connect=settings.upstream_connect_timeout_s),
        limits=httpx.Limits(max_connections=settings.max_upstream_connections,
                            max_keepalive_connections=settings.max_upstream_connections,
                            keepalive_expiry=UPSTREAM_KEEPALIVE_S),
        follow_redirects=False, cookies=proxy.refuse_all_cookies())
    aws = AwsClients(settings)
    try:
        app.state.live = live.LiveHub()
        deps = app.state.deps = build_deps(settings, app.state.http, app.state.live)
        app.state.upstreams = routing.base_urls(settings)
        end_streams_on_stop(app.state.live)
        async with revocation_feed(aws, settings, deps), live_feed(aws, settings, app.state.live):
            yield
    finally:
        await aws.close()
        await app.state.http.aclose()


def end_streams_on_stop(hub: live.LiveHub) -> None:
    """At SIGTERM/SIGINT, end the live streams before uvicorn waits for open requests to finish (they never
    would; `shutdown_grace_s` would cut them later). uvicorn's own handlers are installed by now and restored
    by it at exit; ours runs first and passes the signal on. Only a server in the main thread has signals."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue

        def handler(number: int, frame: FrameType | None, previous: Callable[[int, FrameType | None], Any] = previous,
                    ) -> None:
            loop.call_soon_threadsafe(hub.close_all)
            previous(number, frame)

        signal.signal(signum, handler)


async def _authorize(request: Request) -> tuple[Principal, str | None]:
    """Verify the caller's token (401 before anything is proxied); for an API key, the access token it was
    traded for, as the Authorization header to forward in its place."""
    deps: Deps = request.app.state.deps
    token = bearer_token(request)
    forwarded = None
    if is_api_key(token):
        if not routing.accepts_api_keys(request.url.path):
            raise InvalidApiKey("API keys are accepted on /v1 and /api only; sign in for this.")
        token = await deps.api_keys.access_token(token)
        forwarded = f"Bearer {token}"
    return await deps.verifier.verify(token), forwarded


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    require_service_token(settings)  # for auth's /internal routes (API keys, revocations)
    configure_logging("gateway", settings.log_level)
    # Body limits at the edge too: a body over its route's limit is refused here, never streamed on.
    app = create_app("gateway", lifespan=lifespan, limits=body_limits(settings), guard_internal=False,
                     docs_url=None, redoc_url=None, openapi_url=None)
    if not settings.is_development:
        app.add_middleware(StrictTransportSecurity)
    app.state.settings = settings
    openapi.install(app)  # the public API's description: /openapi.json and /docs

    headers = page_headers(settings)
    static_root = STATIC.resolve()

    # `/login` and `/dashboard`: where auth's Google sign-in lands (an error, or no safe `next`); the app
    # turns them into its own pages.
    @app.get("/", include_in_schema=False)
    @app.get("/login", include_in_schema=False)
    @app.get("/dashboard", include_in_schema=False)
    async def home() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=headers)

    events_module = browser_events.module_source()

    @app.get("/static/events.js", include_in_schema=False)
    async def event_names() -> Response:
        return Response(events_module, media_type="text/javascript", headers=headers)

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        path = (static_root / name).resolve()
        if not path.is_relative_to(static_root) or not path.is_file():
            raise NotFound(f"Unknown request URL: GET /static/{name}.")
        return FileResponse(path, headers=headers)

    @app.get("/api/events", include_in_schema=False)
    async def events(request: Request) -> StreamingResponse:
        """Server-Sent Events: the caller's own files and training events, live; resumes after
        `Last-Event-ID`; ends when the access token expires (the client reconnects with a new one) or when
        its session, API key or account is revoked."""
        principal, _ = await _authorize(request)
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        deps: Deps = request.app.state.deps
        credential = live.Credential(session_id=principal.session_id, api_key_id=principal.api_key_id)
        body = live.stream(request.app.state.live, principal.user_id, last, until=principal.expires_at,
                           credential=credential,
                           revoked=lambda: deps.revocations.denies(session_id=principal.session_id,
                                                                   user_id=principal.user_id,
                                                                   api_key_id=principal.api_key_id))
        return StreamingResponse(body, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
    async def route(path: str, request: Request) -> Response:
        service = routing.upstream_for(request.url.path)
        if service is None:
            raise NotFound(f"Unknown request URL: {request.method} {request.url.path}.")
        authorization = None
        if not routing.is_public(request.method, request.url.path):
            _, authorization = await _authorize(request)
        return await proxy.forward(request.app.state.http, request.app.state.upstreams[service], request,
                                   authorization=authorization)

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    # At a stop the live streams end at once (end_streams_on_stop); other requests in flight get
    # `shutdown_grace_s`, then are closed, rather than holding the process until its SIGKILL.
    settings = Settings()
    uvicorn.run(build_app(settings), host=serve_host(), port=serve_port(5000), log_config=None,
                timeout_graceful_shutdown=settings.shutdown_grace_s)


if __name__ == "__main__":
    main()
