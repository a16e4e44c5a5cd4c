"""An upload's hold on the user's quota: reserved before its bytes are stored, given back when the upload fails
(`undo`), and reclaimed from direct uploads that will not complete (`discard_upload`, `sweep_expired_uploads`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.files.deps import Deps
from services.files.models import FileRecord
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
