"""S3 helpers more than one service needs."""

from __future__ import annotations

from typing import Any


async def delete_object_versions(s3: Any, bucket: str, prefix: str) -> int:
    """Remove every version (and delete marker) of the objects under `prefix`: nothing of it stays."""
    removed = 0
    paginator = s3.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        targets = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                   for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
        for i in range(0, len(targets), 1000):
            await s3.delete_objects(Bucket=bucket, Delete={"Objects": targets[i:i + 1000], "Quiet": True})
            removed += len(targets[i:i + 1000])
    return removed
