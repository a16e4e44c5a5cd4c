"""Validating an uploaded fine-tune file: its object streamed from S3 through the formats pipeline, its outputs
written next to it: the normalised examples the trainer reads (`normalized/{user_id}/{file_id}.jsonl`) and the
report (`reports/{user_id}/{file_id}.json`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from services.files.deps import Deps
from services.files.formats import FORMATS, Report, validate_stream
from services.files.models import FileRecord
from services.files.object_keys import normalized_key, report_key
from services.files.s3_writer import S3StreamWriter
from shared.errors import InvalidRequest

READ_CHUNK_BYTES = 64 * 1024
# The normalised file is about the size of the original (Alpaca and Q/A gain a few role keys per example).
NORMALIZED_GROWTH = 4
VALIDATED_PURPOSES = ("fine-tune",)


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
class ValidatedObject:
    """What validating one file left in S3, and its report."""

    report: Report
    normalized_key: str | None  # set when the file passed: the trainer's input
    report_key: str


async def validate_object(record: FileRecord, deps: Deps) -> ValidatedObject:
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
    return ValidatedObject(report, out_key if report.ok else None, key)
