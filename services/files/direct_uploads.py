"""Direct uploads: a big file goes from the browser straight to S3, in parts, over presigned URLs.

`POST /api/uploads` reserves the quota for the declared size, opens an S3 multipart upload and writes the
file record (status `uploading`, not part of /v1 until complete); the client PUTs each part to its URL and
keeps the ETag S3 answers; `POST /api/uploads/{id}/complete` with those ETags checks each stored part's size
against the plan (ListParts), assembles the object, checks its real size against the declared one and announces
`file.uploaded` (validation follows as for any upload); `DELETE /api/uploads/{id}` aborts.

Each part URL signs the part's length (`content-length` is in X-Amz-SignedHeaders), so S3 refuses a part of any
other size; the check at completion holds where signatures are not checked (the embedded AWS). A user has at most
`max_open_uploads` open at once (429); the files worker aborts those older than `upload_max_age_s`
(upload_reservations.sweep_old_uploads), and a user's uploads whose URLs expired go when the quota fills.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from services.files.deps import Deps
from services.files.filenames import clean_filename
from services.files.handlers import get_own
from services.files.models import UPLOADABLE_PURPOSES, FileRecord, file_event_fields
from services.files.object_keys import new_file_id, object_key
from services.files.upload_reservations import discard_upload, new_reservation, undo
from services.files.validation import requested_format
from shared.contracts.files_events import FileUploaded
from shared.envelope import new_event
from shared.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from shared.s3 import delete_key_versions

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_BYTES = 8 * MiB
MAX_PARTS = 10_000  # S3's limit for one multipart upload


class CreateUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(max_length=4096)  # cleaned and cut to 255 characters for display
    purpose: str = Field(max_length=64)
    bytes: int = Field(ge=0)
    format: str | None = Field(default=None, max_length=64)
    mime_type: str | None = Field(default=None, max_length=255)  # as OpenAI's Uploads API takes it; unused


class UploadedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    part_number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=256)


class CompleteUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parts: list[UploadedPart] = Field(min_length=1, max_length=MAX_PARTS)


@dataclass(frozen=True)
class PartPlan:
    part_bytes: int
    count: int

    def sizes(self, total: int) -> list[int]:
        return [min(self.part_bytes, total - i * self.part_bytes) for i in range(self.count)]


def part_plan(total: int, min_part: int = MIN_PART_BYTES, max_parts: int = MAX_PARTS) -> PartPlan:
    """Parts of at least `min_part` bytes, whole MiB, few enough for S3's part limit."""
    part = max(min_part, math.ceil(total / max_parts / MiB) * MiB)
    return PartPlan(part_bytes=part, count=max(1, math.ceil(total / part)))


def upload_object(record: FileRecord, status: str, *, parts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The answer of every /api/uploads route (shaped like OpenAI's Upload object, with the parts to PUT)."""
    body: dict[str, Any] = {
        "id": record.file_id, "object": "upload", "status": status, "filename": record.filename,
        "purpose": record.purpose, "bytes": record.bytes, "created_at": record.created_at,
        "expires_at": record.upload_expires_at, "file": record.openai() if status == "completed" else None}
    if parts is not None:
        body["part_bytes"] = part_plan(record.bytes).part_bytes
        body["parts"] = parts
    return body


def _check_purpose(purpose: str) -> str:
    if purpose not in UPLOADABLE_PURPOSES:
        raise InvalidRequest(f"Invalid purpose {purpose!r}; expected one of {', '.join(UPLOADABLE_PURPOSES)}.",
                             param="purpose", code="invalid_value")
    return purpose


async def create_upload(cmd: CreateUpload, user_id: str, deps: Deps) -> dict[str, Any]:
    purpose = _check_purpose(cmd.purpose.strip())
    file_format = requested_format(cmd.format)
    if cmd.bytes == 0:
        raise InvalidRequest("The file is empty.", param="bytes", code="empty_file")
    if cmd.bytes > deps.max_direct_upload_bytes:
        raise PayloadTooLarge(f"File is larger than the {deps.max_direct_upload_bytes} byte limit.", param="bytes",
                              code="file_too_large")
    file_id = new_file_id()
    key = object_key(user_id, file_id)
    reservation = new_reservation(user_id, deps, cmd.bytes)
    await reservation.cover(cmd.bytes)  # 413 before anything is stored
    upload_id: str | None = None
    try:
        upload_id = (await deps.s3.create_multipart_upload(Bucket=deps.bucket, Key=key, **deps.sse))["UploadId"]
        now = int(time.time())
        record = FileRecord(file_id=file_id, user_id=user_id, filename=clean_filename(cmd.filename),
                            purpose=purpose, bytes=cmd.bytes, created_at=now, status="uploading", s3_key=key,
                            upload_id=upload_id, upload_expires_at=now + deps.upload_url_ttl_s, format=file_format)
        await deps.usage.open_upload(record, deps.max_open_uploads)  # 429 beyond the cap; counted with the record
    except BaseException:
        async def abort() -> None:
            if upload_id is not None:
                await deps.s3.abort_multipart_upload(Bucket=deps.bucket, Key=key, UploadId=upload_id)
        await undo(abort, reservation.cancel)
        raise
    plan = part_plan(cmd.bytes)
    parts = []
    for number, size in enumerate(plan.sizes(cmd.bytes), start=1):
        # ContentLength is signed (botocore adds it to X-Amz-SignedHeaders): S3 takes this part at this size only.
        url = await deps.s3.generate_presigned_url(
            "upload_part", Params={"Bucket": deps.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                                   "ContentLength": size}, ExpiresIn=deps.upload_url_ttl_s, HttpMethod="PUT")
        parts.append({"part_number": number, "bytes": size, "url": url})
    log.info("direct upload created", extra={"file_id": file_id, "bytes": cmd.bytes, "parts": plan.count})
    return upload_object(record, "pending", parts=parts)


async def complete_upload(file_id: str, cmd: CompleteUpload, user_id: str, deps: Deps) -> dict[str, Any]:
    record = await get_own(file_id, user_id, deps)
    if record.status != "uploading":
        return upload_object(record, "completed")  # a repeated complete: the same answer
    numbers = [p.part_number for p in cmd.parts]
    if len(set(numbers)) != len(numbers):
        raise InvalidRequest("Each part_number may appear once.", param="parts", code="duplicate_part")
    if max(numbers) > part_plan(record.bytes).count:
        raise InvalidRequest(f"This upload has {part_plan(record.bytes).count} part(s).", param="parts",
                             code="invalid_part_number")
    parts = [{"PartNumber": p.part_number, "ETag": p.etag} for p in sorted(cmd.parts, key=lambda p: p.part_number)]
    try:
        await check_part_sizes(record, numbers, deps)
        await deps.s3.complete_multipart_upload(Bucket=deps.bucket, Key=record.s3_key, UploadId=record.upload_id,
                                                MultipartUpload={"Parts": parts})
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "NoSuchUpload":  # aborted, or swept after it expired
            await discard_upload(record, deps)
            raise NotFound(f"Upload {file_id} has expired or was aborted.", param="id") from exc
        # A wrong ETag, a missing or too small part: the upload stays open, so the client may fix and retry.
        raise InvalidRequest(f"S3 could not assemble the parts: {error.get('Message') or error.get('Code')}",
                             param="parts", code="invalid_parts") from exc
    try:
        head = await deps.s3.head_object(Bucket=deps.bucket, Key=record.s3_key)
    except ClientError as exc:  # removed as soon as assembled: the account was deleted meanwhile
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        return await _not_finished(record, deps)
    if head["ContentLength"] != record.bytes:
        await undo(lambda: delete_key_versions(deps.s3, deps.bucket, record.s3_key),
                   lambda: deps.usage.remove_file(record.file_id, user_id, record.bytes, status="uploading"))
        raise InvalidRequest(f"The parts hold {head['ContentLength']} bytes, but {record.bytes} were declared; "
                             "the upload was discarded.", param="parts", code="size_mismatch")
    if not await deps.usage.finish_upload(record.file_id, user_id):
        return await _not_finished(record, deps)
    record = record.model_copy(update={"status": "uploaded", "upload_id": None, "upload_expires_at": None})
    await deps.events.publish(new_event(FileUploaded(**file_event_fields(record, deps.bucket)), user_id=user_id))
    log.info("direct upload completed", extra={"file_id": file_id, "bytes": record.bytes})
    return upload_object(record, "completed")


async def check_part_sizes(record: FileRecord, numbers: list[int], deps: Deps) -> None:
    """Each named part as S3 stores it must be exactly as long as the plan says (ListParts); otherwise the upload
    is discarded (parts, record, quota) and 400 `part_size_mismatch`. A named part S3 does not have is left to
    CompleteMultipartUpload to refuse (the upload stays open for a retry)."""
    planned = part_plan(record.bytes).sizes(record.bytes)
    stored: dict[int, int] = {}
    paginator = deps.s3.get_paginator("list_parts")
    async for page in paginator.paginate(Bucket=deps.bucket, Key=record.s3_key, UploadId=record.upload_id):
        stored.update({int(p["PartNumber"]): int(p["Size"]) for p in page.get("Parts", [])})
    wrong = [n for n in numbers if n in stored and stored[n] != planned[n - 1]]
    if wrong:
        await discard_upload(record, deps)
        n = wrong[0]
        raise InvalidRequest(f"Part {n} holds {stored[n]} bytes, but {planned[n - 1]} were declared; the upload was "
                             "discarded.", param="parts", code="part_size_mismatch")


async def _not_finished(record: FileRecord, deps: Deps) -> dict[str, Any]:
    """S3 assembled the object, but the record did not become `uploaded`: completed by a concurrent request (the
    same answer), or aborted or the account deleted meanwhile (the object goes, and with it the record)."""
    current = await deps.files.get(record.file_id)
    if current is not None and current.status != "uploading":
        return upload_object(current, "completed")
    await delete_key_versions(deps.s3, deps.bucket, record.s3_key)
    if current is not None and await deps.usage.deleted(record.user_id):
        await deps.files.delete(record.file_id)  # a deleted account's record: no quota left to give back
    elif current is not None:
        await discard_upload(current, deps)
    log.info("direct upload completed after it was aborted; object removed", extra={"file_id": record.file_id})
    raise NotFound(f"Upload {record.file_id} was aborted.", param="id")


async def abort_upload(file_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    record = await get_own(file_id, user_id, deps)
    if record.status != "uploading":
        raise Conflict(f"Upload {file_id} is complete; DELETE /v1/files/{file_id} removes the file.", param="id",
                       code="upload_completed")
    await discard_upload(record, deps)
    return upload_object(record, "cancelled")
