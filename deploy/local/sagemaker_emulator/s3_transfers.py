"""S3 transfers a training job needs: input channels in, checkpoints both ways, artifacts out."""

from __future__ import annotations

import logging
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> (`bucket`, `some/key`)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def join_s3_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def _keys_under(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]
    return keys


def _relative_path(key: str, prefix: str) -> PurePosixPath:
    relative = key[len(prefix):].lstrip("/") or PurePosixPath(key).name
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"refusing S3 key that leaves its directory: {key}")
    return path


def download_channel(s3: Any, uri: str, data_type: str, dest: Path) -> int:
    """S3Prefix: every object under the prefix, keeping the path below it. S3Object: that one object.
    Returns how many files arrived."""
    bucket, key = split_s3_uri(uri)
    keys = [key] if data_type == "S3Object" else _keys_under(s3, bucket, key)
    if not keys:
        raise FileNotFoundError(f"no objects under {uri}")
    for object_key in keys:
        target = dest / _relative_path(object_key, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, object_key, str(target))
    return len(keys)


def download_prefix_if_any(s3: Any, uri: str, dest: Path) -> int:
    """What an earlier run left under `uri` (checkpoints to resume from); nothing there is fine."""
    bucket, key = split_s3_uri(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    keys = _keys_under(s3, bucket, prefix)
    for object_key in keys:
        target = dest / _relative_path(object_key, prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, object_key, str(target))
    return len(keys)


class DirectorySync:
    """Uploads the files of a local directory to an S3 prefix, each again only once it changed."""

    def __init__(self, s3: Any, source: Path, uri: str, extra_args: dict[str, str] | None = None) -> None:
        self._s3, self._source, self._extra_args = s3, source, extra_args or {}
        self._bucket, key = split_s3_uri(uri)
        self._prefix = key.rstrip("/") + "/" if key else ""
        self._uploaded: dict[Path, tuple[int, int]] = {}

    def sync(self) -> int:
        count = 0
        for path in sorted(p for p in self._source.rglob("*") if p.is_file()):
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime_ns)
            if self._uploaded.get(path) == signature:
                continue
            key = self._prefix + path.relative_to(self._source).as_posix()
            self._s3.upload_file(str(path), self._bucket, key, ExtraArgs=self._extra_args)
            self._uploaded[path] = signature
            count += 1
        return count


def tar_directory(source: Path, archive: Path) -> None:
    """`model.tar.gz` as SageMaker builds it: the directory's contents at the archive's root."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)


def upload_file(s3: Any, path: Path, uri: str, kms_key_id: str | None) -> None:
    bucket, key = split_s3_uri(uri)
    s3.upload_file(str(path), bucket, key, ExtraArgs=sse_args(kms_key_id))


def sse_args(kms_key_id: str | None) -> dict[str, str]:
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id} if kms_key_id else {}
