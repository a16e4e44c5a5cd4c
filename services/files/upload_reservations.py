"""An upload's hold on the user's quota: reserved before its bytes are stored, given back when the upload fails
(`undo`), and reclaimed from direct uploads that will not complete (`discard_upload`): a user's whose URLs expired
when that user's quota is full (`sweep_expired_uploads`), everyone's older than a setting on the files worker's
schedule (`sweep_old_uploads`, `sweep_periodically`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.files.deps import Deps
from services.files.models import FileRecord
from services.files.object_keys import FILES_PREFIX
from services.files.quota import Reservation

log = logging.getLogger(__name__)


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


async def sweep_old_uploads(deps: Deps, created_before: int) -> int:
    """Discard every direct upload created before `created_before` (epoch s) that is still open: its S3 upload,
    its record and the quota it reserved (it stops counting as open). They are found through S3's list of
    unfinished uploads under files/, their age read from their record (S3's `Initiated` is not kept by every
    embedded AWS). An unfinished upload no record names (a create or a streamed upload that died half-way) holds
    no quota: the bucket's lifecycle rule aborts it. How many were discarded."""
    swept = 0
    paginator = deps.s3.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=deps.bucket, Prefix=FILES_PREFIX):
        for upload in page.get("Uploads", []):
            file_id = upload["Key"].rsplit("/", 1)[-1]
            record = await deps.files.get(file_id) if file_id.startswith("file-") else None
            if (record is None or record.status != "uploading" or record.upload_id != upload["UploadId"]
                    or record.created_at >= created_before):
                continue
            if await discard_upload(record, deps):
                swept += 1
                log.info("old upload discarded", extra={"file_id": file_id, "created_at": record.created_at})
    return swept


async def sweep_periodically(deps: Deps, interval_s: float) -> None:
    """The files worker's schedule: every `interval_s`, discard the direct uploads older than
    `deps.upload_max_age_s` (each replica does; discarding twice is harmless). Runs until cancelled; a failed
    round is logged, not fatal."""
    while True:
        try:
            swept = await sweep_old_uploads(deps, int(time.time()) - deps.upload_max_age_s)
            if swept:
                log.info("old uploads swept", extra={"swept": swept})
        except Exception:
            log.exception("upload sweep failed; trying again at the next round")
        await asyncio.sleep(interval_s)
