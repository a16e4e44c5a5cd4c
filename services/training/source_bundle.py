"""Script mode's trainer source (LAUNCH_MODE=script): the trainer (trainer_image/finetune.py, requirements.txt and
the llmt_trainer package beside finetune.py) packed into `sourcedir.tar.gz` and uploaded once per content hash to
`s3://{bucket}/code/{sha256}/`, the `sagemaker_submit_directory` a script-mode launch names (launch.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

from services.training.deps import S3
from shared.s3 import sse_args

log = logging.getLogger(__name__)

TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainer_image"
SOURCE_FILES = ("finetune.py", "requirements.txt")  # and every module of TRAINER_PACKAGE, beside them
TRAINER_PACKAGE = "llmt_trainer"
PROGRAM = "finetune.py"


def package_source(directory: Path = TRAINER_DIR, files: tuple[str, ...] = SOURCE_FILES) -> tuple[bytes, str]:
    """`sourcedir.tar.gz` and its sha256: the same files give the same bytes (no times, owners or modes of
    this machine), so the hash names the content and an unchanged trainer is never uploaded twice."""
    package = sorted(p.relative_to(directory).as_posix() for p in (directory / TRAINER_PACKAGE).rglob("*.py"))
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name in (*files, *package):
            data = (directory / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    body = raw.getvalue()
    return body, hashlib.sha256(body).hexdigest()


@dataclass
class SourceBundle:
    """The trainer's source for script mode; what this process already knows is in S3 is not checked again."""

    directory: Path = TRAINER_DIR
    uploaded: set[str] = field(default_factory=set)

    async def ensure_uploaded(self, s3: S3, bucket: str, kms_key_id: str | None) -> str:
        body, digest = package_source(self.directory)
        key = f"code/{digest}/sourcedir.tar.gz"
        uri = f"s3://{bucket}/{key}"
        if uri in self.uploaded:
            return uri
        try:
            await s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/gzip",
                                **sse_args(kms_key_id))
            log.info("trainer source uploaded", extra={"uri": uri, "bytes": len(body)})
        self.uploaded.add(uri)
        return uri
