"""S3 helpers more than one service needs."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any


def sse_args(kms_key_id: str | None) -> dict[str, str]:
    """Server-side encryption for a PutObject or CreateMultipartUpload: SSE-KMS with the configured key,
    else SSE-S3. Every object this project writes is encrypted at rest, whatever the bucket default."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}


async def _delete_versions(s3: Any, bucket: str, prefix: str, exact: bool) -> int:
    removed = 0
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        targets = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                   for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                   if not exact or v["Key"] == prefix]
        for i in range(0, len(targets), 1000):
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": targets[i:i + 1000], "Quiet": True})
            removed += len(targets[i:i + 1000])
    return removed


async def delete_object_versions(s3: Any, bucket: str, prefix: str) -> int:
    """Remove every version (and delete marker) of the objects under `prefix`: nothing of it stays."""
    return await _delete_versions(s3, bucket, prefix, exact=False)


async def delete_key_versions(s3: Any, bucket: str, key: str) -> int:
    """Every version of exactly `key`, and nothing of a longer key that merely starts with it."""
    return await _delete_versions(s3, bucket, key, exact=True)


async def abort_multipart_uploads(s3: Any, bucket: str, prefix: str) -> int:
    """Abort the unfinished multipart uploads under `prefix`: their parts are stored (and billed) until then."""
    aborted = 0
    paginator = s3.get_paginator("list_multipart_uploads")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for upload in page.get("Uploads", []):
            try:
                await s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
            except s3.exceptions.NoSuchUpload:
                pass
    return aborted


async def iter_body(body: Any, chunk_bytes: int = 64 * 1024) -> AsyncGenerator[bytes, None]:
    """A GetObject body as chunks, for a streamed response; the connection is released even when the client
    goes away half-way (the response task is cancelled inside this generator)."""
    try:
        async for chunk in body.iter_chunks(chunk_bytes):
            yield chunk
    finally:
        body.close()
