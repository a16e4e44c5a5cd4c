"""files' report routes: a file's validation report and a preview of its normalised examples."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.files import handlers, reporting
from shared.tokens import Caller
from shared.web import app_deps

Deps = Annotated[handlers.Deps, Depends(app_deps)]
router = APIRouter()


@router.get("/api/files/{file_id}/report")
async def file_report(file_id: str, caller: Caller, d: Deps) -> dict[str, Any]:
    return await reporting.read_report(await handlers.get_file(file_id, caller.user_id, d), d)


@router.get("/api/files/{file_id}/preview")
async def file_preview(file_id: str, caller: Caller, d: Deps,
                       limit: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
    return await reporting.read_preview(await handlers.get_file(file_id, caller.user_id, d), limit, d)
