"""Where a hosted model's files come from, and bringing them to a local directory.

A base inference component's model (its SageMaker Model's container), as LMI reads it:
- Environment `HF_MODEL_ID`: an `s3://` prefix (downloaded), a local directory, or a Hugging Face Hub id (the
  server loads it with from_pretrained; real machines only). `HF_MODEL_ID=/opt/ml/model` means the model data.
- else `ModelDataSource.S3DataSource`: an S3Prefix without compression (downloaded as is), or a gzip'd tar
  object; else `ModelDataUrl`: a `model.tar.gz`.
An adapter inference component's `Container.ArtifactUrl`: a `model.tar.gz` whose root holds the PEFT adapter.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import s3_transfers

log = logging.getLogger(__name__)

CONTAINER_MODEL_DIR = "/opt/ml/model"  # what HF_MODEL_ID names when the weights come as model data
COMPLETE_MARKER = ".llmt-download-complete"


class ArtifactError(Exception):
    """The model's files cannot be had; the inference component fails with this reason."""


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "s3_prefix" | "s3_tarball" | "local_dir" | "hub_id"
    location: str


def model_source(container: dict[str, Any]) -> ModelSource:
    model_id = (container.get("Environment") or {}).get("HF_MODEL_ID")
    if model_id and model_id.rstrip("/") != CONTAINER_MODEL_DIR:
        if model_id.startswith("s3://"):
            return ModelSource("s3_prefix", model_id)
        if model_id.startswith(("/", "./", "../")) or Path(model_id).is_dir():
            return ModelSource("local_dir", model_id)
        return ModelSource("hub_id", model_id)
    data = (container.get("ModelDataSource") or {}).get("S3DataSource")
    if data:
        if (data["S3DataType"], data["CompressionType"]) == ("S3Prefix", "None"):
            return ModelSource("s3_prefix", data["S3Uri"])
        if (data["S3DataType"], data["CompressionType"]) == ("S3Object", "Gzip"):
            return ModelSource("s3_tarball", data["S3Uri"])
        raise ArtifactError(f"ModelDataSource {data['S3DataType']} with CompressionType {data['CompressionType']} "
                            "is not supported by this emulator (S3Prefix/None or S3Object/Gzip)")
    if container.get("ModelDataUrl"):
        return ModelSource("s3_tarball", container["ModelDataUrl"])
    raise ArtifactError("The model names no weights: set the container's Environment HF_MODEL_ID (an s3:// "
                        "prefix, a local directory or a Hub id), or ModelDataSource, or ModelDataUrl")


def fetch_model(s3: Any, source: ModelSource, dest: Path) -> str:
    """What the generation server loads: a local directory (downloaded into `dest` once), or a Hub id."""
    if source.kind == "hub_id":
        return source.location
    if source.kind == "local_dir":
        if not (Path(source.location) / "config.json").is_file():
            raise ArtifactError(f"HF_MODEL_ID {source.location}: no config.json there (a save_pretrained folder)")
        return source.location
    if source.kind == "s3_prefix":
        _download(dest, lambda staging: _download_prefix(s3, source.location, staging))
    else:
        _download(dest, lambda staging: _download_tarball(s3, source.location, staging))
    return str(dest)


def fetch_adapter(s3: Any, artifact_url: str, dest: Path) -> Path:
    """The adapter's `model.tar.gz`, unpacked into `dest` (its root must hold adapter_config.json)."""
    if not artifact_url.startswith("s3://"):
        raise ArtifactError(f"ArtifactUrl {artifact_url}: this emulator reads s3:// URIs only")
    _download(dest, lambda staging: _download_tarball(s3, artifact_url, staging))
    if not (dest / "adapter_config.json").is_file():
        raise ArtifactError(f"ArtifactUrl {artifact_url}: the archive's root holds no adapter_config.json "
                            "(a PEFT adapter saved with save_pretrained)")
    return dest


def _download(dest: Path, fill: Any) -> None:
    """Fill a staging directory, then move it into place: `dest` is whole or absent; a whole one is reused."""
    if (dest / COMPLETE_MARKER).is_file():
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        fill(staging)
        (staging / COMPLETE_MARKER).touch()
        os.replace(staging, dest)
    except (BotoCoreError, ClientError, OSError, tarfile.TarError, ValueError) as exc:
        raise ArtifactError(f"Could not download the model data: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download_prefix(s3: Any, uri: str, into: Path) -> None:
    if s3_transfers.download_prefix_if_any(s3, uri, into) == 0:
        raise ArtifactError(f"no objects under {uri}")
    log.info("model downloaded", extra={"uri": uri, "into": str(into)})


def _download_tarball(s3: Any, uri: str, into: Path) -> None:
    bucket, key = s3_transfers.split_s3_uri(uri)
    archive = into.parent / f"{into.name}.tar.gz"
    try:
        s3.download_file(bucket, key, str(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    finally:
        archive.unlink(missing_ok=True)
    log.info("model archive unpacked", extra={"uri": uri, "into": str(into)})
