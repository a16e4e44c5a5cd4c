"""A stream of bytes written to one S3 object as it arrives: an S3 multipart upload, one part at a time, so
memory stays at one part whatever the size of the file (an upload's bytes, validation's normalised examples)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.files.deps import S3Client
from shared.errors import PayloadTooLarge


class S3StreamWriter:
    """`before_write(total)` runs before the bytes that bring the file to `total` are kept (the quota
    reservation); raising there, like passing `max_bytes`, stops the upload: the caller then calls `abort`."""

    def __init__(self, s3: S3Client, bucket: str, key: str, *, part_bytes: int, max_bytes: int,
                 sse: dict[str, str] | None = None,
                 before_write: Callable[[int], Awaitable[None]] | None = None) -> None:
        self._s3, self._bucket, self._key = s3, bucket, key
        self._part_bytes = max(part_bytes, 5 * 1024 * 1024)  # S3's minimum for all parts but the last
        self._max_bytes = max_bytes
        self._sse = sse or {"ServerSideEncryption": "AES256"}
        self._before_write = before_write
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._max_bytes:
            raise PayloadTooLarge(f"File is larger than the {self._max_bytes} byte limit.", param="file",
                                  code="file_too_large")
        if self._before_write is not None:
            await self._before_write(self.size)
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            chunk = bytes(self._buffer[: self._part_bytes])
            del self._buffer[: self._part_bytes]
            await self._upload_part(chunk)

    async def _upload_part(self, chunk: bytes) -> None:
        if self._upload_id is None:
            created = await self._s3.create_multipart_upload(Bucket=self._bucket, Key=self._key, **self._sse)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        result = await self._s3.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                            PartNumber=number, Body=chunk)
        self._parts.append({"PartNumber": number, "ETag": result["ETag"]})

    async def finish(self) -> None:
        if self._upload_id is None:  # small file: one PUT
            await self._s3.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), **self._sse)
            return
        if self._buffer:
            await self._upload_part(bytes(self._buffer))
            self._buffer.clear()
        await self._s3.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                 MultipartUpload={"Parts": self._parts})

    async def abort(self) -> None:
        """Nothing of the upload stays: the unfinished multipart upload and its parts are dropped."""
        if self._upload_id is not None:
            await self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None
        self._buffer.clear()
