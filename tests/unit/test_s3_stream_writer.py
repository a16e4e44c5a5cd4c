"""services/files/s3_writer.py: parts go up while the stream goes on, a few at once, and nothing stays after
an abort."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.files.s3_writer import MIN_PART_BYTES, S3StreamWriter

PART = MIN_PART_BYTES


class HeldS3:
    """Just the multipart calls, each part held until released; records what S3 would have."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.release = asyncio.Event()
        self.started: list[int] = []
        self.parts: dict[int, bytes] = {}
        self.completed: list[dict[str, Any]] | None = None
        self.aborted = False
        self.fail_part = fail_part

    async def create_multipart_upload(self, *, Bucket: str, Key: str, **options: Any) -> dict[str, Any]:
        return {"UploadId": "u1"}

    async def upload_part(self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                          Body: bytes) -> dict[str, Any]:
        self.started.append(PartNumber)
        await self.release.wait()
        if PartNumber == self.fail_part:
            raise RuntimeError("S3 said no")
        self.parts[PartNumber] = Body
        return {"ETag": f'"{PartNumber}"'}

    async def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str | None,
                                        MultipartUpload: dict[str, Any]) -> dict[str, Any]:
        self.completed = MultipartUpload["Parts"]
        return {}

    async def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]:
        self.aborted = True
        return {}

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **options: Any) -> dict[str, Any]:
        raise AssertionError("a multipart upload never PUTs")


def _writer(s3: HeldS3, concurrency: int) -> S3StreamWriter:
    return S3StreamWriter(s3, "b", "k", part_bytes=PART, max_bytes=100 * PART, concurrency=concurrency)


def test_parts_go_up_at_once_and_complete_in_order() -> None:
    async def scenario() -> HeldS3:
        s3 = HeldS3()
        writer = _writer(s3, concurrency=3)
        for fill in (b"a", b"b"):
            await writer.write(fill * PART)  # returns while the part is still held: the stream goes on
        await asyncio.sleep(0)
        assert s3.started == [1, 2] and not s3.parts
        await writer.write(b"c" * 10)
        s3.release.set()
        await writer.finish()
        return s3

    s3 = asyncio.run(scenario())
    assert s3.completed == [{"PartNumber": 1, "ETag": '"1"'}, {"PartNumber": 2, "ETag": '"2"'},
                            {"PartNumber": 3, "ETag": '"3"'}]
    assert s3.parts == {1: b"a" * PART, 2: b"b" * PART, 3: b"c" * 10}


def test_no_more_than_concurrency_parts_are_in_flight() -> None:
    async def scenario() -> list[int]:
        s3 = HeldS3()
        writer = _writer(s3, concurrency=2)
        await writer.write(b"a" * PART)
        blocked = asyncio.create_task(writer.write(b"b" * PART))  # the second part fills the two places
        for _ in range(5):
            await asyncio.sleep(0)
        assert not blocked.done()
        s3.release.set()
        await blocked
        await writer.finish()
        return s3.started

    assert asyncio.run(scenario()) == [1, 2]


def test_a_failed_part_fails_the_upload_and_abort_leaves_nothing() -> None:
    async def scenario() -> HeldS3:
        s3 = HeldS3(fail_part=1)
        writer = _writer(s3, concurrency=3)
        await writer.write(b"a" * PART)
        await writer.write(b"b" * PART)
        s3.release.set()
        with pytest.raises(RuntimeError, match="S3 said no"):
            await writer.finish()
        await writer.abort()
        return s3

    s3 = asyncio.run(scenario())
    assert s3.aborted and s3.completed is None


def test_abort_cancels_parts_in_flight() -> None:
    async def scenario() -> HeldS3:
        s3 = HeldS3()
        writer = _writer(s3, concurrency=3)
        await writer.write(b"a" * PART)
        await asyncio.sleep(0)
        await writer.abort()  # the held part never completes
        return s3

    s3 = asyncio.run(scenario())
    assert s3.aborted and s3.started == [1] and not s3.parts
