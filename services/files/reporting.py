"""Validation's outputs in S3, next to the file: the normalised examples the trainer reads
(`normalized/{user_id}/{file_id}.jsonl`) and the report (`reports/{user_id}/{file_id}.json`); and reading
them back for `GET /api/files/{id}/report` and `/preview`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.files.formats import FORMATS, Report, formula_like_paths, validate_stream
from services.files.formats.preview import shortened
from services.files.formats.readers import lines
from services.files.models import FileRecord
from services.files.upload import S3StreamWriter
from shared.errors import Conflict, InvalidRequest, NotFound

if TYPE_CHECKING:
    from services.files.handlers import Deps

log = logging.getLogger(__name__)
READ_CHUNK_BYTES = 64 * 1024
PREVIEW_MAX_CHARS = 4000  # a previewed text longer than this is cut (and said to be)
# The normalised file is about the size of the original (Alpaca and Q/A gain a few role keys per example).
NORMALIZED_GROWTH = 4
VALIDATED_PURPOSES = ("fine-tune",)


def normalized_key(user_id: str, file_id: str) -> str:
    return f"normalized/{user_id}/{file_id}.jsonl"


def report_key(user_id: str, file_id: str) -> str:
    return f"reports/{user_id}/{file_id}.json"


def requested_format(value: str | None) -> str | None:
    """The upload's optional `format` field: one of FORMATS, or nothing (or "auto") to detect it."""
    value = (value or "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in FORMATS:
        raise InvalidRequest(f"Invalid format {value!r}; expected one of {', '.join(FORMATS)} (or leave it out "
                             "to detect it from the content).", param="format", code="invalid_value")
    return value


@dataclass(frozen=True)
class Validation:
    report: Report
    normalized_key: str | None  # set when the file passed: the trainer's input
    report_key: str


async def validate_object(record: FileRecord, deps: Deps) -> Validation:
    """Stream the file from S3 through validation; the normalised examples stream back into S3 (kept only
    when the file passes), the report is stored whatever the outcome."""
    out_key = normalized_key(record.user_id, record.file_id)
    writer = S3StreamWriter(deps.s3, deps.bucket, out_key, part_bytes=deps.upload_part_bytes,
                            max_bytes=NORMALIZED_GROWTH * max(record.bytes, deps.max_file_bytes), sse=deps.sse)
    try:
        obj = await deps.s3.get_object(Bucket=deps.bucket, Key=record.s3_key)
        async with obj["Body"] as body:
            report = await validate_stream(body.iter_chunks(READ_CHUNK_BYTES), filename=record.filename,
                                           requested_format=record.format, limits=deps.limits, sink=writer.write)
        if report.ok:
            await writer.finish()
        else:
            await writer.abort()
    except BaseException:
        await writer.abort()
        raise
    key = report_key(record.user_id, record.file_id)
    stored = {"object": "file.validation_report", "file_id": record.file_id, "filename": record.filename,
              "bytes": record.bytes, "created_at": int(time.time()), **report.body}
    await deps.s3.put_object(Bucket=deps.bucket, Key=key, Body=json.dumps(stored).encode(),
                             ContentType="application/json", **deps.sse)
    return Validation(report, out_key if report.ok else None, key)


def _not_validated(record: FileRecord) -> NotFound:
    return NotFound(f"File {record.file_id} has purpose {record.purpose!r}; only fine-tune files are validated, "
                    "so it has no report.", param="id", code="report_not_available")


def _check_validated(record: FileRecord) -> None:
    if record.purpose not in VALIDATED_PURPOSES:
        raise _not_validated(record)
    if record.status in ("uploading", "uploaded"):
        raise Conflict(f"File {record.file_id} is still being validated; try again in a few seconds.",
                       param="id", code="validation_in_progress", headers={"Retry-After": "2"})


async def read_report(record: FileRecord, deps: Deps) -> dict[str, Any]:
    """The stored report of the caller's file (owner already checked)."""
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


async def read_preview(record: FileRecord, limit: int, deps: Deps) -> dict[str, Any]:
    """The first `limit` normalised examples, read as a stream (only those lines are fetched)."""
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
