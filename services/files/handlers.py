"""What happens for each files command and event."""

from __future__ import annotations

import logging
import secrets
import string
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request

from services.files import events
from services.files.models import UPLOADABLE_PURPOSES, FileRecord
from services.files.store import FilesStore
from services.files.upload import S3StreamWriter, stream_multipart_to
from services.files.validation import ChatValidator, lines
from shared.errors import InvalidRequest, NotFound
from shared.events import Envelope, new_event
from shared.s3 import delete_object_versions

log = logging.getLogger(__name__)
_ALPHABET = string.ascii_letters + string.digits


class EventPublisher(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...


@dataclass
class Deps:
    files: FilesStore
    s3: Any
    bucket: str
    events: EventPublisher
    max_file_bytes: int
    upload_part_bytes: int
    max_line_bytes: int


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def object_key(user_id: str, file_id: str) -> str:
    """Keys come from ids only: a filename never reaches a key."""
    return f"files/{user_id}/{file_id}"


def clean_filename(name: str | None) -> str:
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in unicodedata.normalize("NFC", base) if c.isprintable()).strip()
    return base[:255] or "upload"


def _event_data(record: FileRecord, bucket: str) -> dict[str, Any]:
    return {"file_id": record.file_id, "user_id": record.user_id, "purpose": record.purpose,
            "filename": record.filename, "bytes": record.bytes, "s3_uri": f"s3://{bucket}/{record.s3_key}"}


async def upload_file(request: Request, user_id: str, deps: Deps) -> FileRecord:
    file_id = new_file_id()
    key = object_key(user_id, file_id)
    writer = S3StreamWriter(deps.s3, deps.bucket, key, part_bytes=deps.upload_part_bytes,
                            max_bytes=deps.max_file_bytes)
    try:
        parsed = await stream_multipart_to(request, "file", writer)
        purpose = parsed.fields.get("purpose", "").strip()
        if not parsed.saw_file:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if not purpose:
            raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose",
                                 code="missing_required_parameter")
        if purpose not in UPLOADABLE_PURPOSES:
            raise InvalidRequest(f"Invalid purpose {purpose!r}; expected one of {', '.join(UPLOADABLE_PURPOSES)}.",
                                 param="purpose", code="invalid_value")
        if writer.size == 0:
            raise InvalidRequest("The file is empty.", param="file", code="empty_file")
        await writer.finish()
    except BaseException:
        await writer.abort()
        raise
    record = FileRecord(file_id=file_id, user_id=user_id, filename=clean_filename(parsed.filename),
                        purpose=purpose, bytes=writer.size, created_at=int(time.time()), s3_key=key)
    await deps.files.put(record)
    await deps.events.publish(new_event(events.FILE_UPLOADED, _event_data(record, deps.bucket), user_id=user_id))
    return record


async def get_file(file_id: str, user_id: str, deps: Deps) -> FileRecord:
    record = await deps.files.get(file_id) if file_id.startswith("file-") else None
    if record is None or record.user_id != user_id:  # another user's file does not exist for this caller
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


async def list_files(user_id: str, deps: Deps, *, purpose: str | None, limit: int, after: str | None,
                     order: str) -> tuple[list[FileRecord], bool]:
    records = [r for r in await deps.files.list_for_user(user_id) if purpose is None or r.purpose == purpose]
    records.sort(key=lambda r: (r.created_at, r.file_id), reverse=order == "desc")
    if after:
        ids = [r.file_id for r in records]
        if after not in ids:
            raise InvalidRequest(f"No such File object for 'after': {after}", param="after")
        records = records[ids.index(after) + 1:]
    return records[:limit], len(records) > limit


async def validate_uploaded(envelope: Envelope, deps: Deps) -> None:
    """Worker: stream the object from S3, validate it, record and announce the outcome (once)."""
    file_id = str(envelope.data["file_id"])
    record = await deps.files.get(file_id)
    if record is None or record.status != "uploaded":
        return  # deleted, or already validated: nothing to do
    validator = ChatValidator()
    if record.purpose == "fine-tune":
        obj = await deps.s3.get_object(Bucket=deps.bucket, Key=record.s3_key)
        async with obj["Body"] as body:
            async for line_no, raw in lines(body.iter_chunks(64 * 1024), deps.max_line_bytes):
                if raw is None:
                    validator.too_long(line_no, deps.max_line_bytes)
                else:
                    validator.feed(line_no, raw)
        ok = validator.ok
    else:
        ok = True  # other purposes are stored as they are
    status = "processed" if ok else "error"
    details = None if ok else validator.summary()
    if not await deps.files.set_result(file_id, status, details, validator.examples):
        return
    data = {**_event_data(record, deps.bucket), "status": status, "examples": validator.examples}
    if not ok:
        data["error"] = details
        data["errors"] = [vars(e) for e in validator.errors[:20]]
    event_type = events.FILE_VALIDATED if ok else events.FILE_REJECTED
    await deps.events.publish(new_event(event_type, data, user_id=record.user_id))
    log.info("file validated", extra={"file_id": file_id, "status": status, "examples": validator.examples})


async def delete_user_data(envelope: Envelope, deps: Deps) -> None:
    """A deleted account's files go with it: every object version, every record (idempotent)."""
    user_id = str(envelope.data["user_id"])
    for record in await deps.files.list_for_user(user_id):
        await delete_object_versions(deps.s3, deps.bucket, record.s3_key)
        await deps.files.delete(record.file_id)
        await deps.events.publish(new_event(events.FILE_DELETED, {**_event_data(record, deps.bucket),
                                                                  "reason": "user_deleted"}, user_id=user_id))
    await delete_object_versions(deps.s3, deps.bucket, f"files/{user_id}/")  # uploads that never got a record
    log.info("user's files removed", extra={"user_id": user_id})


EVENT_HANDLERS = {events.FILE_UPLOADED: validate_uploaded, events.USER_DELETED: delete_user_data}
