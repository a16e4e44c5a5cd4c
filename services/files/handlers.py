"""What happens for each files command and event."""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import ClientDisconnect, Request

from services.files import events, reporting
from services.files.formats import Limits
from services.files.models import UPLOADABLE_PURPOSES, FileRecord
from services.files.names import clean_filename
from services.files.quota import Reservation, UsageStore
from services.files.store import FilesStore
from services.files.upload import S3StreamWriter, stream_multipart_to
from shared.errors import InvalidRequest, NotFound, PayloadTooLarge
from shared.events import Envelope, new_event
from shared.s3 import abort_multipart_uploads, delete_key_versions, delete_object_versions

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
    limits: Limits  # what validation accepts and warns about
    usage: UsageStore
    user_quota_bytes: int
    max_direct_upload_bytes: int
    upload_url_ttl_s: int
    sse: dict[str, str]  # server-side encryption arguments for every object files writes


def new_file_id() -> str:
    return "file-" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def object_key(user_id: str, file_id: str) -> str:
    """Keys come from ids only: a filename never reaches a key."""
    return f"files/{user_id}/{file_id}"


def stored_keys(record: FileRecord) -> list[str]:
    """Every object a file owns: its bytes, and what validation derived from them (the normalized JSONL,
    the report), by convention and by any other `*_key` the record names."""
    keys = [record.s3_key, f"normalized/{record.user_id}/{record.file_id}.jsonl",
            f"reports/{record.user_id}/{record.file_id}.json"]
    named = [v for k, v in record.model_dump().items() if k.endswith("_key") and isinstance(v, str) and v]
    return list(dict.fromkeys(keys + named))


def _event_data(record: FileRecord, bucket: str) -> dict[str, Any]:
    return {"file_id": record.file_id, "user_id": record.user_id, "purpose": record.purpose,
            "filename": record.filename, "bytes": record.bytes, "s3_uri": f"s3://{bucket}/{record.s3_key}"}


# The multipart framing around the file part (boundaries, part headers, the purpose field) is far below this:
# a body longer than the file limit plus this cannot carry a file within the limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def new_reservation(user_id: str, deps: Deps, ceiling: int) -> Reservation:
    """A share of the user's quota for one upload; when the quota is full, the user's expired direct uploads
    are swept once first (their reservations would otherwise hold it until the next sweep)."""
    return Reservation(deps.usage, user_id, deps.user_quota_bytes, step=deps.upload_part_bytes, ceiling=ceiling,
                       on_full=lambda: sweep_expired_uploads(user_id, deps))


async def undo(*steps: Callable[[], Awaitable[Any]]) -> None:
    """Run every cleanup step, even when one fails or the request's task is being cancelled (a client that
    went away): nothing half-stored may stay behind."""
    async def run_all() -> None:
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("upload cleanup step failed")
    await asyncio.shield(run_all())


async def upload_file(request: Request, user_id: str, deps: Deps) -> FileRecord:
    declared = _declared_length(request)
    if declared is not None and declared > deps.max_file_bytes + MULTIPART_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"File is larger than the {deps.max_file_bytes} byte limit.", param="file",
                              code="file_too_large")
    file_id = new_file_id()
    key = object_key(user_id, file_id)
    reservation = new_reservation(user_id, deps, deps.max_file_bytes)
    writer = S3StreamWriter(deps.s3, deps.bucket, key, part_bytes=deps.upload_part_bytes,
                            max_bytes=deps.max_file_bytes, sse=deps.sse, before_write=reservation.cover)
    try:
        if declared is not None:  # the quota is checked before a byte is read; what the file leaves is released
            await reservation.cover(min(declared, deps.max_file_bytes))
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
        file_format = reporting.requested_format(parsed.fields.get("format"))
        if writer.size == 0:
            raise InvalidRequest("The file is empty.", param="file", code="empty_file")
        await writer.finish()
        await reservation.settle(writer.size)
    except ClientDisconnect as exc:
        await undo(writer.abort, reservation.cancel)
        raise InvalidRequest("The upload was interrupted before the whole file arrived.", param="file",
                             code="upload_interrupted") from exc
    except BaseException:
        await undo(writer.abort, reservation.cancel)
        raise
    record = FileRecord(file_id=file_id, user_id=user_id, filename=clean_filename(parsed.filename),
                        purpose=purpose, bytes=writer.size, created_at=int(time.time()), s3_key=key,
                        format=file_format)
    try:
        await deps.files.put(record)
    except BaseException:
        await undo(lambda: delete_key_versions(deps.s3, deps.bucket, key), reservation.cancel)
        raise
    await deps.events.publish(new_event(events.FILE_UPLOADED, _event_data(record, deps.bucket), user_id=user_id))
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


async def delete_file(file_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    """`DELETE /v1/files/{id}`: every version of every object the file owns, then the record and its quota
    (together), then `file.deleted`. OpenAI's FileDeleted answer."""
    record = await get_file(file_id, user_id, deps)
    for key in stored_keys(record):
        await delete_key_versions(deps.s3, deps.bucket, key)
    if await deps.usage.remove_file(record.file_id, user_id, record.bytes):  # once, however often it is asked
        await deps.events.publish(new_event(events.FILE_DELETED, {**_event_data(record, deps.bucket),
                                                                  "reason": "deleted"}, user_id=user_id))
    return {"id": record.file_id, "object": "file", "deleted": True}


async def open_content(file_id: str, user_id: str, deps: Deps) -> tuple[FileRecord, Any]:
    """The file's record and its S3 object (`Body` still to be read), for `GET /v1/files/{id}/content`."""
    record = await get_file(file_id, user_id, deps)
    try:
        obj = await deps.s3.get_object(Bucket=deps.bucket, Key=record.s3_key)
    except deps.s3.exceptions.NoSuchKey as exc:
        raise NotFound(f"No content for File object: {file_id}", param="id") from exc
    return record, obj


async def discard_upload(record: FileRecord, deps: Deps) -> bool:
    """Drop a direct upload that will not complete: its S3 multipart upload, any object, the record and its
    reservation. False when it was no longer `uploading` (completed or discarded meanwhile)."""
    if record.upload_id:
        try:
            await deps.s3.abort_multipart_upload(Bucket=deps.bucket, Key=record.s3_key, UploadId=record.upload_id)
        except deps.s3.exceptions.NoSuchUpload:
            pass  # aborted already, or completed: the object is handled by whoever completed it
    return await deps.usage.remove_file(record.file_id, record.user_id, record.bytes, status="uploading")


async def sweep_expired_uploads(user_id: str, deps: Deps) -> bool:
    """Discard the user's direct uploads whose URLs have expired; True when any quota was freed."""
    now = int(time.time())
    freed = False
    for record in await deps.files.list_for_user(user_id):
        if record.status == "uploading" and (record.upload_expires_at or 0) < now:
            freed = await discard_upload(record, deps) or freed
    return freed


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


async def validate_uploaded(envelope: Envelope, deps: Deps) -> None:
    """Worker: stream a fine-tune file from S3 through validation (its normalised examples and report go to
    S3), record the outcome and the report's summary, announce it (once)."""
    file_id = str(envelope.data["file_id"])
    record = await deps.files.get(file_id)
    if record is None or record.status != "uploaded":
        return  # deleted, or already validated: nothing to do
    data = _event_data(record, deps.bucket)
    if record.purpose not in reporting.VALIDATED_PURPOSES:  # other purposes are stored as they are
        if await deps.files.set_result(file_id, "processed", None, 0):
            await deps.events.publish(new_event(events.FILE_VALIDATED, {**data, "status": "processed", "examples": 0},
                                                user_id=record.user_id))
        return
    result = await reporting.validate_object(record, deps)
    report = result.report
    status = "processed" if report.ok else "error"
    summary = {**report.summary(), "report_key": result.report_key}
    if result.normalized_key:
        summary["normalized_key"] = result.normalized_key
    if not await deps.files.set_result(file_id, status, report.status_details(), report.examples, summary):
        if await deps.files.get(file_id) is None:  # deleted while it was being validated: leave nothing behind
            for key in (result.report_key, result.normalized_key):
                if key:
                    await delete_key_versions(deps.s3, deps.bucket, key)
        return
    data |= {"status": status, "examples": report.examples, "format": report.body["format"],
             "example_type": report.body["example_type"],
             "estimated_tokens": report.body["statistics"]["estimated_tokens"],
             "normalized_uri": f"s3://{deps.bucket}/{result.normalized_key}" if result.normalized_key else None,
             "report_uri": f"s3://{deps.bucket}/{result.report_key}"}
    if not report.ok:
        data["error"] = report.status_details()
        data["errors"] = report.errors[:20]
    event_type = events.FILE_VALIDATED if report.ok else events.FILE_REJECTED
    await deps.events.publish(new_event(event_type, data, user_id=record.user_id))
    log.info("file validated", extra={"file_id": file_id, "status": status, "examples": report.examples,
                                      "format": report.body["format"]})


async def delete_user_data(envelope: Envelope, deps: Deps) -> None:
    """A deleted account's files go with it: every object version, every record (idempotent)."""
    user_id = str(envelope.data["user_id"])
    for record in await deps.files.list_for_user(user_id):
        await delete_object_versions(deps.s3, deps.bucket, record.s3_key)
        await deps.files.delete(record.file_id)
        await deps.events.publish(new_event(events.FILE_DELETED, {**_event_data(record, deps.bucket),
                                                                  "reason": "user_deleted"}, user_id=user_id))
    await abort_multipart_uploads(deps.s3, deps.bucket, f"files/{user_id}/")  # direct uploads in flight
    for prefix in (f"files/{user_id}/", f"normalized/{user_id}/", f"reports/{user_id}/"):
        await delete_object_versions(deps.s3, deps.bucket, prefix)  # objects that never got a record
    await deps.usage.forget(user_id)
    log.info("user's files removed", extra={"user_id": user_id})


async def register_result_file(envelope: Envelope, deps: Deps) -> None:
    """`training.job.succeeded`: the job's results CSV, which training wrote under this user's files, becomes
    a file (purpose fine-tune-results, status processed). Once, however often the event arrives."""
    result = envelope.data.get("result_file")
    if not isinstance(result, dict):
        return  # a job without results
    user_id, file_id = str(envelope.data["user_id"]), str(result["file_id"])
    if result.get("s3_key") != object_key(user_id, file_id):
        log.warning("result file outside its user's keys; ignored", extra={"file_id": file_id})
        return
    if await deps.files.get(file_id) is not None:
        return  # registered by an earlier delivery
    record = FileRecord(file_id=file_id, user_id=user_id, filename=clean_filename(result.get("filename")),
                        purpose="fine-tune-results", bytes=int(result["bytes"]), created_at=int(time.time()),
                        status="processed", s3_key=object_key(user_id, file_id))
    await deps.files.put(record)  # conditional: a concurrent delivery fails here and finds it next time
    await deps.usage.add(user_id, record.bytes)  # results count against the quota, and are never refused
    log.info("result file registered", extra={"file_id": file_id, "job_id": envelope.data.get("job_id")})


EVENT_HANDLERS = {events.FILE_UPLOADED: validate_uploaded, events.USER_DELETED: delete_user_data,
                  events.TRAINING_JOB_SUCCEEDED: register_result_file}
