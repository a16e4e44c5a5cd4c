"""auth's HTTP entry: users, passwords, access tokens and the JWKS every service verifies them with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from services.auth import handlers
from services.auth.keys import Signer
from services.auth.models import Credentials, Registration
from services.auth.passwords import _dummy_hash
from services.auth.settings import Settings
from services.auth.store import UsersStore
from shared.aws import AwsClients
from shared.errors import NotFound
from shared.events import Publisher
from shared.logging import configure_logging
from shared.tokens import Caller, JWKSVerifier
from shared.web import create_app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    aws = AwsClients(settings)
    signer = Signer.from_settings(settings)
    app.state.signer = signer
    app.state.deps = handlers.Deps(
        users=UsersStore(await aws.get("dynamodb"), settings.users_table), signer=signer,
        events=Publisher(await aws.get("sns"), await aws.topic_arn(settings.events_topic)),
        bcrypt_rounds=settings.bcrypt_rounds)

    async def own_jwks() -> dict[str, Any]:
        return signer.jwks()

    app.state.verifier = JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer,
                                      audience=settings.jwt_audience, fetch=own_jwks)
    _dummy_hash(settings.bcrypt_rounds)  # so the first unknown-email login costs what the others do
    try:
        yield
    finally:
        await app.state.verifier.aclose()
        await aws.close()


def _deps(request: Request) -> handlers.Deps:
    return request.app.state.deps  # type: ignore[no-any-return]


Deps = Annotated[handlers.Deps, Depends(_deps)]


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging("auth", settings.log_level)
    app = create_app("auth", lifespan=lifespan)
    app.state.settings = settings

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
    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(request.app.state.signer.jwks(), headers={"Cache-Control": "public, max-age=300"})

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5001), log_config=None)


if __name__ == "__main__":
    main()
