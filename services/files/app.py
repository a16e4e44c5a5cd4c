"""files' HTTP entry: the OpenAI-compatible /v1/files API, direct uploads (/api/uploads) and what validation
found (/api/files/{id}/report, /preview). Requests are read here; the handlers get plain values."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from services.files import deps, direct_uploads, handlers
from services.files.bootstrap import build_deps
from services.files.filenames import content_disposition
from services.files.multipart_form import StreamedForm
from services.files.settings import Settings
from shared.errors import InvalidRequest
from shared.s3 import iter_body
from shared.tokens import Caller
from shared.web import app_deps, create_service_app

Deps = Annotated[deps.Deps, Depends(app_deps)]


def declared_length(request: Request) -> int | None:
    """The body's Content-Length, when the client sent one (a chunked upload has none)."""
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def build_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("files", settings or Settings(), build_deps)

    @app.post("/v1/files")
    async def create_file(request: Request, caller: Caller, d: Deps) -> dict[str, Any]:
        # The body is read as the handler stores it: a big file is never held, and never parsed by FastAPI.
        form = StreamedForm(request.headers.get("content-type", ""), request.stream(), file_field="file")
        try:
            record = await handlers.upload_file(form, declared_length(request), caller.user_id, d)
        except ClientDisconnect as exc:
            raise InvalidRequest("The upload was interrupted before the whole file arrived.", param="file",
                                 code="upload_interrupted") from exc
        return record.openai()

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
    async def create_upload(body: direct_uploads.CreateUpload, caller: Caller, d: Deps) -> dict[str, Any]:
        return await direct_uploads.create_upload(body, caller.user_id, d)

    @app.post("/api/uploads/{file_id}/complete")
    async def complete_upload(file_id: str, body: direct_uploads.CompleteUpload, caller: Caller,
                              d: Deps) -> dict[str, Any]:
        return await direct_uploads.complete_upload(file_id, body, caller.user_id, d)

    @app.delete("/api/uploads/{file_id}")
    async def abort_upload(file_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await direct_uploads.abort_upload(file_id, caller.user_id, d)

    # What validation found: a fine-tune file's report, and a preview of its normalised examples.
    @app.get("/api/files/{file_id}/report")
    async def file_report(file_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
        return await handlers.read_report(file_id, caller.user_id, d)

    @app.get("/api/files/{file_id}/preview")
    async def file_preview(file_id: str, caller: Caller, d: Deps,
                           limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        return await handlers.read_preview(file_id, caller.user_id, limit, d)

    return app


def main() -> None:
    import uvicorn

    from shared.runner import serve_host, serve_port
    uvicorn.run(build_app(), host=serve_host(), port=serve_port(5002), log_config=None)


if __name__ == "__main__":
    main()
