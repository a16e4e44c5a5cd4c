"""files' HTTP entry: the OpenAI-compatible /v1/files API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request

from services.files import handlers
from services.files.bootstrap import build_deps
from services.files.settings import Settings
from shared.tokens import Caller
from shared.web import app_deps, create_service_app

Deps = Annotated[handlers.Deps, Depends(app_deps)]


def build_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("files", settings or Settings(), build_deps)

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
