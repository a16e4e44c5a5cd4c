"""auth's HTTP entry: users, passwords, access tokens and the JWKS every service verifies them with."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from services.auth import handlers
from services.auth.bootstrap import build_deps, own_key_verifier
from services.auth.models import Credentials, Registration
from services.auth.settings import Settings
from shared.errors import NotFound
from shared.tokens import Caller
from shared.web import app_deps, create_service_app

Deps = Annotated[handlers.Deps, Depends(app_deps)]


def build_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("auth", settings or Settings(), build_deps, own_key_verifier)

    @app.post("/auth/register", status_code=201)
    async def register(body: Registration, d: Deps) -> dict[str, Any]:
        return await handlers.register(body, d)

    @app.post("/auth/login")
    async def login(body: Credentials, d: Deps) -> dict[str, Any]:
        return await handlers.login(body, d)

    @app.get("/auth/me")
    async def me(caller: Caller, d: Deps) -> dict[str, Any]:
        user = await d.users.get(caller.user_id)
        if user is None:
            raise NotFound("User not found.")
        return user.public()

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
