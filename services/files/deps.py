"""What the files service's handlers depend on, as protocols with only the methods they use, and the `Deps` that
holds them. bootstrap.py wires the real ones; unit tests pass fakes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from services.files.formats import Limits
from services.files.models import FileRecord
from shared.envelope import EventPublisher


class FileRecords(Protocol):
    """The files table (services/files/store.FilesStore)."""

    async def put(self, record: FileRecord) -> None: ...

    async def get(self, file_id: str) -> FileRecord | None: ...

    async def list_for_user(self, user_id: str) -> list[FileRecord]: ...

    async def delete(self, file_id: str) -> None: ...

    async def set_result(self, file_id: str, status: str, details: str | None, examples: int | None,
                         summary: Mapping[str, str | int] | None = None) -> bool: ...


class QuotaReservations(Protocol):
    """What an upload's reservation needs of the usage table (services/files/quota.Reservation)."""

    async def reserve(self, user_id: str, n: int, quota: int) -> None: ...

    async def release(self, user_id: str, n: int) -> None: ...


class UsageLedger(QuotaReservations, Protocol):
    """The per-user usage table (services/files/quota.UsageStore)."""

    async def put_file(self, record: FileRecord, *, count_bytes: int = 0) -> bool: ...

    async def open_upload(self, record: FileRecord, max_open: int) -> None: ...

    async def finish_upload(self, file_id: str, user_id: str) -> bool: ...

    async def remove_file(self, file_id: str, user_id: str, n: int, *, status: str | None = None) -> bool: ...

    async def deleted(self, user_id: str) -> bool: ...

    async def forget(self, user_id: str) -> None: ...


class S3Client(Protocol):
    """The S3 calls files makes (an aiobotocore client), with boto's keyword names. `get_paginator` and
    `delete_objects` are what shared/s3.py's version sweeps call; `exceptions` has NoSuchKey and NoSuchUpload."""

    exceptions: Any

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **options: Any) -> dict[str, Any]: ...

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]: ...

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]: ...

    async def create_multipart_upload(self, *, Bucket: str, Key: str, **options: Any) -> dict[str, Any]: ...

    async def upload_part(self, *, Bucket: str, Key: str, UploadId: str, PartNumber: int,
                          Body: bytes) -> dict[str, Any]: ...

    async def complete_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str | None,
                                        MultipartUpload: dict[str, Any]) -> dict[str, Any]: ...

    async def abort_multipart_upload(self, *, Bucket: str, Key: str, UploadId: str) -> dict[str, Any]: ...

    async def generate_presigned_url(self, ClientMethod: str, Params: dict[str, Any], ExpiresIn: int,
                                     HttpMethod: str) -> str: ...

    async def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]: ...

    def get_paginator(self, operation_name: str) -> Any: ...


@dataclass
class Deps:
    files: FileRecords
    s3: S3Client
    bucket: str
    events: EventPublisher
    max_file_bytes: int
    upload_part_bytes: int
    limits: Limits  # what validation accepts and warns about
    usage: UsageLedger
    user_quota_bytes: int
    max_direct_upload_bytes: int
    upload_url_ttl_s: int
    max_open_uploads: int  # direct uploads one user may have open at once
    upload_max_age_s: int  # an open direct upload older than this is aborted by the files worker's sweep
    sse: dict[str, str]  # server-side encryption arguments for every object files writes
