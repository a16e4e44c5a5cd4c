"""auth's HTTP entry: accounts, sessions, API keys, and the JWKS every service verifies tokens with."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.auth import google_routes, handlers
from services.auth.bootstrap import build_deps, own_key_verifier
from services.auth.cookies import clear_session_cookies, require_csrf, set_session_cookies
from services.auth.deps import Deps as AuthDeps
from services.auth.models import Credentials, DeleteAccount, PasswordChange, Registration
from services.auth.proxy_headers import client_info, client_ip
from services.auth.settings import Settings
from shared.errors import Unauthorized, error_response
from shared.tokens import Caller, Principal
from shared.web import app_deps, create_service_app

Deps = Annotated[AuthDeps, Depends(app_deps)]


class NewApiKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)


class KeyExchange(BaseModel):
    key: str = Field(min_length=1, max_length=200)


def _session_response(grant: handlers.SessionGrant, settings: Settings, status: int = 200) -> JSONResponse:
    response = JSONResponse(grant.body, status_code=status)
    set_session_cookies(response, grant, settings)
    return response


def _refused(exc: Unauthorized, settings: Settings) -> JSONResponse:
    """401 for a refresh token that is not (or no longer) good, and the browser's session cookies cleared."""
    response = error_response(401, exc.message, exc.error_type, None, exc.code)
    clear_session_cookies(response, settings)
    return response


async def _optional_principal(request: Request) -> Principal | None:
    if not request.headers.get("authorization"):
        return None
    try:
        from shared.tokens import current_principal
        return await current_principal(request)
    except Unauthorized:
        return None


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = create_service_app("auth", settings, build_deps, own_key_verifier)
    app.include_router(google_routes.build_router(settings))

    @app.post("/auth/register", status_code=201)
    async def register(body: Registration, request: Request, d: Deps) -> JSONResponse:
        grant = await handlers.register(body, client_info(request, settings), d)
        return _session_response(grant, settings, status=201)

    @app.post("/auth/login")
    async def login(body: Credentials, request: Request, d: Deps) -> JSONResponse:
        return _session_response(await handlers.login(body, client_info(request, settings), d), settings)

    @app.post("/auth/refresh")
    async def refresh(request: Request, d: Deps) -> JSONResponse:
        require_csrf(request, settings)
        token = request.cookies.get(settings.refresh_cookie)
        try:
            grant = await handlers.refresh(token, client_ip(request, settings), d)
        except Unauthorized as exc:
            return _refused(exc, settings)
        return _session_response(grant, settings)

    @app.post("/auth/logout", status_code=204)
    async def logout(request: Request, d: Deps) -> Response:
        token = request.cookies.get(settings.refresh_cookie)
        if token:
            require_csrf(request, settings)
        try:
            await handlers.logout(token, await _optional_principal(request), d)
        except Unauthorized as exc:  # a wrong secret ends nothing; the browser's bad cookie goes
            return _refused(exc, settings)
        response = Response(status_code=204)
        clear_session_cookies(response, settings)
        return response

    @app.get("/auth/me")
    async def me(caller: Caller, d: Deps) -> dict[str, Any]:
        return await handlers.me(caller, d)

    @app.post("/auth/password", status_code=204)
    async def change_password(body: PasswordChange, request: Request, caller: Caller, d: Deps) -> Response:
        await handlers.change_password(caller, body, client_info(request, settings), d)
        return Response(status_code=204)

    @app.delete("/auth/me", status_code=204)
    async def delete_me(request: Request, caller: Caller, d: Deps, body: DeleteAccount | None = None) -> Response:
        await handlers.delete_account(caller, body.password if body else None, client_info(request, settings), d)
        response = Response(status_code=204)
        clear_session_cookies(response, settings)
        return response

    @app.post("/auth/api-keys", status_code=201)
    async def create_api_key(body: NewApiKey, request: Request, caller: Caller, d: Deps) -> dict[str, Any]:
        return await handlers.create_api_key(caller, body.name, client_info(request, settings), d)

    @app.get("/auth/api-keys")
    async def list_api_keys(caller: Caller, d: Deps) -> dict[str, Any]:
        return {"object": "list", "data": await handlers.list_api_keys(caller, d), "has_more": False}

    @app.delete("/auth/api-keys/{key_id}")
    async def revoke_api_key(key_id: str, request: Request, caller: Caller, d: Deps) -> dict[str, Any]:
        await handlers.revoke_api_key(caller, key_id, client_info(request, settings), d)
        return {"id": key_id, "object": "api_key", "deleted": True}

    @app.get("/api/audit")
    async def audit(caller: Caller, d: Deps, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                    after: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        """The caller's security events (sign-ins, new addresses, password and key changes), newest first."""
        return await handlers.list_audit(caller, limit, after, d)

    # Internal: the gateway's calls. The gateway never routes /internal, so only the private network reaches it.
    @app.post("/internal/api-keys/exchange")
    async def exchange_api_key(body: KeyExchange, d: Deps) -> dict[str, Any]:
        return await handlers.exchange_api_key(body.key, d)

    @app.get("/internal/revocations")
    async def revocations(since: int, d: Deps) -> dict[str, Any]:
        sessions = await d.sessions.revoked_since(since)
        return {"sessions": [{"session_id": s.session_id, "user_id": s.user_id} for s in sessions]}

    @app.get("/.well-known/jwks.json")
    async def jwks(d: Deps) -> JSONResponse:
        return JSONResponse(d.signer.jwks(), headers={"Cache-Control": "public, max-age=300"})

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5001), log_config=None)


if __name__ == "__main__":
    main()
