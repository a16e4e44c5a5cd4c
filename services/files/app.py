"""files' HTTP entry: the OpenAI-compatible /v1/files API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request

from services.files import handlers
from services.files.bootstrap import build_deps
from services.files.settings import Settings
from shared.aws import AwsClients
from shared.logging import configure_logging
from shared.tokens import Caller, JWKSVerifier
from shared.web import create_app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    aws = AwsClients(settings)
    app.state.deps = await build_deps(aws, settings)
    app.state.verifier = JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer,
                                      audience=settings.jwt_audience)
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
    configure_logging("files", settings.log_level)
    app = create_app("files", lifespan=lifespan)
    app.state.settings = settings

    @app.post("/v1/files")
    async def create_file(request: Request, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await handlers.upload_file(request, caller.user_id, d)).openai()

    @app.get("/v1/files")
    async def list_files(caller: Caller, d: Deps, purpose: str | None = None,
                         limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
                         after: str | None = None, order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
        records, has_more = await handlers.list_files(caller.user_id, d, purpose=purpose, limit=limit,
                                                      after=after, order=order)
        data = [r.openai() for r in records]
        return {"object": "list", "data": data, "has_more": has_more,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    @app.get("/v1/files/{file_id}")
    async def retrieve_file(file_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return (await handlers.get_file(file_id, caller.user_id, d)).openai()

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5002), log_config=None)


if __name__ == "__main__":
    main()
