"""A stream of bytes written to one S3 object as it arrives: an S3 multipart upload whose parts go up while the
next ones are still arriving (at most `concurrency` at once), so memory stays at a few parts whatever the size
of the file (an upload's bytes, validation's normalised examples), and the stream is not held up while S3
takes each part."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from shared.errors import PayloadTooLarge

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum for all parts but the last
# Parts in flight at once. With one, the stream stops for every part's round trip to S3 (and, behind it, the
# gateway and the client); with two it keeps moving (a third measured no faster on bench.files, and each costs
# one part of memory).
PARTS_IN_FLIGHT = 2


class MultipartS3(Protocol):
    """The S3 calls a writer makes (services/files/deps.S3Client has them)."""

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **options: Any) -> dict[str, Any]: ...

    async def create_multipart_upload(self, *, Bucket: str, Key: str, **options: Any) -> dict[str, Any]: ...

    async def upload_part(self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                          Body: bytes) -> dict[str, Any]: ...

    async def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str | None,
                                        MultipartUpload: dict[str, Any]) -> dict[str, Any]: ...

    async def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]: ...


class S3StreamWriter:
    """`before_write(total)` runs before the bytes that bring the file to `total` are kept (the quota
    reservation); raising there, like passing `max_bytes`, stops the upload: the caller then calls `abort`.
    A part is the bytes written since the last one, once they reach `part_bytes` (so a part is at most one
    `write` longer than that): joining the writes once is the only copy this makes."""

    def __init__(self, s3: MultipartS3, bucket: str, key: str, *, part_bytes: int, max_bytes: int,
                 sse: dict[str, str] | None = None,
                 before_write: Callable[[int], Awaitable[None]] | None = None,
                 concurrency: int = PARTS_IN_FLIGHT) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._part_bytes = max(part_bytes, MIN_PART_BYTES)
        self._max_bytes = max_bytes
        self._sse = sse or {"ServerSideEncryption": "AES256"}
        self._before_write = before_write
        self._concurrency = max(1, concurrency)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._upload_id: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._parts: list[dict[str, Any]] = []
        self._next_part = 1
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max_bytes:
            raise PayloadTooLarge(f"File is larger than the {self._max_bytes} byte limit.", param="file",
                                  code="file_too_large")
        if self._before_write is not None:
            await self._before_write(self.size)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self._part_bytes:
            await self._send_part(self._take_pending())

    def _take_pending(self) -> bytes:
        body = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return body

    async def _send_part(self, body: bytes) -> None:
        """Start the part's upload; return once fewer than `concurrency` are in flight (a failed one raises)."""
        if self._upload_id is None:
            created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key, **self._sse)
            self._upload_id = created["UploadId"]
        number, self._next_part = self._next_part, self._next_part + 1
        self._in_flight.add(asyncio.create_task(self._upload_part(self._upload_id, number, body)))
        while len(self._in_flight) >= self._concurrency:
            await self._wait_for_one()

    async def _upload_part(self, upload_id: str, number: int, body: bytes) -> None:
        result = await self._s3.upload_part(Bucket=self._bucket, Key=self._key, UploadId=upload_id,
                                            PartNumber=number, Body=body)
        self._parts.append({"PartNumber": number, "ETag": result["ETag"]})

    async def _wait_for_one(self) -> None:
        done, self._in_flight = await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a part that failed fails the upload

    async def finish(self) -> None:
        if self._upload_id is None:  # small file: one PUT
            await self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=self._take_pending(), **self._sse)
            return
        if self._pending_bytes:
            await self._send_part(self._take_pending())
        while self._in_flight:
            await self._wait_for_one()
        parts = sorted(self._parts, key=lambda part: int(part["PartNumber"]))
        await self._s3.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                 MultipartUpload={"Parts": parts})

    async def abort(self) -> None:
        """Nothing of the upload stays: parts in flight are cancelled, the unfinished multipart upload and the
        parts it holds are dropped."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight.clear()
        if self._upload_id is not None:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None
        self._pending.clear()
        self._pending_bytes = 0
