"""files' HTTP entry: the OpenAI-compatible /v1/files API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse

from services.files import handlers, reports, uploads
from services.files.bootstrap import build_deps
from services.files.names import content_disposition
from services.files.settings import Settings
from shared.s3 import iter_body
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

    @app.delete("/v1/files/{file_id}")
    async def delete_file(file_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await handlers.delete_file(file_id, caller.user_id, d)

    @app.get("/v1/files/{file_id}/content")
    async def file_content(file_id: str, caller: Caller, d: Deps) -> StreamingResponse:
        record, obj = await handlers.open_content(file_id, caller.user_id, d)
        return StreamingResponse(iter_body(obj["Body"]), media_type="application/octet-stream", headers={
            "Content-Length": str(obj["ContentLength"]), "Content-Disposition": content_disposition(record.filename),
            "X-Content-Type-Options": "nosniff"})

    # Direct uploads: big files go from the browser to S3 over presigned part URLs.
    @app.post("/api/uploads")
    async def create_upload(body: uploads.CreateUpload, caller: Caller, d: Deps) -> dict[str, Any]:
        return await uploads.create_upload(body, caller.user_id, d)

    @app.post("/api/uploads/{file_id}/complete")
    async def complete_upload(file_id: str, body: uploads.CompleteUpload, caller: Caller,
                              d: Deps) -> dict[str, Any]:
        return await uploads.complete_upload(file_id, body, caller.user_id, d)

    @app.delete("/api/uploads/{file_id}")
    async def abort_upload(file_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await uploads.abort_upload(file_id, caller.user_id, d)

    app.include_router(reports.router)  # GET /api/files/{id}/report and /preview
    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5002), log_config=None)


if __name__ == "__main__":
    main()
