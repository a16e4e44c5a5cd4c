"""What each request of the files API does: the streamed upload (`POST /v1/files`), listing, reading,
deleting a file and its content, and reading back what validation left (the report, a preview)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from services.files.deps import Deps
from services.files.filenames import clean_filename
from services.files.formats import formula_like_paths
from services.files.formats.preview import shortened
from services.files.formats.readers import lines
from services.files.models import UPLOADABLE_PURPOSES, FileRecord, file_event_fields
from services.files.object_keys import new_file_id, object_key, stored_keys
from services.files.s3_writer import S3StreamWriter
from services.files.upload_reservations import new_reservation, undo
from services.files.validation import NORMALIZED_GROWTH, READ_CHUNK_BYTES, VALIDATED_PURPOSES, requested_format
from shared.contracts.files_events import FileDeleted, FileUploaded
from shared.envelope import new_event
from shared.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from shared.s3 import delete_key_versions

# The multipart framing around the file part (boundaries, part headers, the purpose field) is far below this:
# a body longer than the file limit plus this cannot carry a file within the limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
PREVIEW_MAX_CHARS = 4000  # a previewed text longer than this is cut (and said to be)


class UploadForm(Protocol):
    """An upload's form as it arrives (the route reads it: services/files/multipart_form.StreamedForm). The
    file's bytes stream first; the other fields, the file's name and whether a file was sent at all are known
    once they have all been read."""

    @property
    def fields(self) -> Mapping[str, str]: ...

    @property
    def filename(self) -> str | None: ...

    @property
    def saw_file(self) -> bool: ...

    def file_chunks(self) -> AsyncIterator[bytes]: ...


async def upload_file(form: UploadForm, declared_bytes: int | None, user_id: str, deps: Deps) -> FileRecord:
    """Stream the form's file into S3, its quota reserved as it comes; then the record, then `file.uploaded`.
    `declared_bytes` is the body's Content-Length, when the client sent one."""
    if declared_bytes is not None and declared_bytes > deps.max_file_bytes + MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"File is larger than the {deps.max_file_bytes} byte limit.", param="file",
                              code="file_too_large")
    file_id = new_file_id()
    key = object_key(user_id, file_id)
    reservation = new_reservation(user_id, deps, deps.max_file_bytes)
    writer = S3StreamWriter(deps.s3, deps.bucket, key, part_bytes=deps.upload_part_bytes,
                            max_bytes=deps.max_file_bytes, sse=deps.sse, before_write=reservation.cover)
    try:
        if declared_bytes is not None:  # the quota is checked before a byte is read; what the file leaves is released
            await reservation.cover(min(declared_bytes, deps.max_file_bytes))
        async for chunk in form.file_chunks():
            await writer.write(chunk)
        purpose = form.fields.get("purpose", "").strip()
        if not form.saw_file:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                                 code="missing_required_parameter")
        if purpose not in UPLOADABLE_PURPOSES:
            raise InvalidRequest(f"Invalid purpose {purpose!r}; expected one of {', '.join(UPLOADABLE_PURPOSES)}.",
                                 param="purpose", code="invalid_value")
        file_format = requested_format(form.fields.get("format"))
        if writer.size == 0:
            raise InvalidRequest("The file is empty.", param="file", code="empty_file")
        await writer.finish()
        await reservation.settle(writer.size)
    except BaseException:  # a refused upload, or a client that went away: nothing of it stays
        await undo(writer.abort, reservation.cancel)
        raise
    record = FileRecord(file_id=file_id, user_id=user_id, filename=clean_filename(form.filename),
                        purpose=purpose, bytes=writer.size, created_at=int(time.time()), s3_key=key,
                        format=file_format)
    try:
        await deps.usage.put_file(record)  # AccountDeleted (401) when the account went while the bytes came
    except BaseException:
        await undo(lambda: delete_key_versions(deps.s3, deps.bucket, key), reservation.cancel)
        raise
    await deps.events.publish(new_event(FileUploaded(**file_event_fields(record, deps.bucket)), user_id=user_id))
    return record


async def get_own(file_id: str, user_id: str, deps: Deps) -> FileRecord:
    """The caller's file, in any status; another user's file does not exist for this caller."""
    record = await deps.files.get(file_id) if file_id.startswith("file-") else None
    if record is None or record.user_id != user_id:
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


async def get_file(file_id: str, user_id: str, deps: Deps) -> FileRecord:
    """A file of the /v1 API: a direct upload is not one until it is complete."""
    record = await get_own(file_id, user_id, deps)
    if record.status == "uploading":
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


async def list_files(user_id: str, deps: Deps, *, purpose: str | None, limit: int, after: str | None,
                     order: str) -> tuple[list[FileRecord], bool]:
    records = [r for r in await deps.files.list_for_user(user_id)
               if r.status != "uploading" and (purpose is None or r.purpose == purpose)]
    records.sort(key=lambda r: (r.created_at, r.file_id), reverse=order == "desc")
    if after:
        ids = [r.file_id for r in records]
        if after not in ids:
            raise InvalidRequest(f"No such File object for 'after': {after}", param="after")
        records = records[ids.index(after) + 1:]
    return records[:limit], len(records) > limit


async def delete_file(file_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    """`DELETE /v1/files/{id}`: every version of every object the file owns, then the record and its quota
    (together), then `file.deleted`. OpenAI's FileDeleted answer."""
    record = await get_file(file_id, user_id, deps)
    for key in stored_keys(record):
        await delete_key_versions(deps.s3, deps.bucket, key)
    if await deps.usage.remove_file(record.file_id, user_id, record.bytes):  # once, however often it is asked
        deleted = FileDeleted(**file_event_fields(record, deps.bucket), reason="deleted")
        await deps.events.publish(new_event(deleted, user_id=user_id))
    return {"id": record.file_id, "object": "file", "deleted": True}


async def open_content(file_id: str, user_id: str, deps: Deps) -> tuple[FileRecord, Any]:
    """The file's record and its S3 object (`Body` still to be read), for `GET /v1/files/{id}/content`."""
    record = await get_file(file_id, user_id, deps)
    try:
        obj = await deps.s3.get_object(Bucket=deps.bucket, Key=record.s3_key)
    except deps.s3.exceptions.NoSuchKey as exc:
        raise NotFound(f"No content for File object: {file_id}", param="id") from exc
    return record, obj


def _not_validated(record: FileRecord) -> NotFound:
    return NotFound(f"File {record.file_id} has purpose {record.purpose!r}; only fine-tune files are validated, "
                    "so it has no report.", param="id", code="report_not_available")


def _check_validated(record: FileRecord) -> None:
    if record.purpose not in VALIDATED_PURPOSES:
        raise _not_validated(record)
    if record.status in ("uploading", "uploaded"):
        raise Conflict(f"File {record.file_id} is still being validated; try again in a few seconds.",
                       param="id", code="validation_in_progress", headers={"Retry-After": "2"})


async def read_report(file_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    """`GET /api/files/{id}/report`: the stored validation report of the caller's file."""
    record = await get_file(file_id, user_id, deps)
    _check_validated(record)
    if not record.report_key:  # validated before reports existed
        raise _not_validated(record)
    try:
        obj = await deps.s3.get_object(Bucket=deps.bucket, Key=record.report_key)
    except deps.s3.exceptions.NoSuchKey as exc:
        raise NotFound(f"The report of file {record.file_id} is gone.", param="id",
                       code="report_not_available") from exc
    async with obj["Body"] as body:
        report: dict[str, Any] = json.loads(await body.read())
    return report


async def read_preview(file_id: str, user_id: str, limit: int, deps: Deps) -> dict[str, Any]:
    """`GET /api/files/{id}/preview`: the first `limit` normalised examples of the caller's file, read as a
    stream (only those lines are fetched)."""
    record = await get_file(file_id, user_id, deps)
    _check_validated(record)
    if record.status == "error":
        raise Conflict(f"File {record.file_id} failed validation, so it has no normalised examples; its report "
                       f"(GET /api/files/{record.file_id}/report) says why.", param="id", code="file_rejected")
    if not record.normalized_key:
        raise _not_validated(record)
    obj = await deps.s3.get_object(Bucket=deps.bucket, Key=record.normalized_key)
    data: list[dict[str, Any]] = []
    has_more = False
    max_line = NORMALIZED_GROWTH * deps.limits.max_line_bytes
    async with obj["Body"] as body:
        async for index, raw in lines(body.iter_chunks(READ_CHUNK_BYTES), max_line):
            if not raw:
                continue
            if len(data) == limit:
                has_more = True
                break
            example, cut = shortened(json.loads(raw), PREVIEW_MAX_CHARS)
            data.append({"index": index, "example": example, "truncated": cut,
                         "formula_like": formula_like_paths(example)})
    return {"object": "list", "file_id": record.file_id, "format": record.format, "layout": record.layout,
            "example_type": record.example_type, "data": data, "has_more": has_more}
