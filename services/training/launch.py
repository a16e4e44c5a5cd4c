"""What a launch adds to the CreateTrainingJob request before it is sent.

LAUNCH_MODE=image (the default): the request as built, TrainingImage = TRAINER_IMAGE_URI (our own image).
LAUNCH_MODE=script: SageMaker script mode. The trainer (trainer_image/finetune.py, requirements.txt and the
llmt_trainer package beside finetune.py) is packed into `sourcedir.tar.gz`, uploaded once per content hash to
`s3://{bucket}/code/{sha256}/`, and the job runs a framework image (the catalog's dated DLC table) with the
hyperparameters the sagemaker SDK sets: `sagemaker_program` and `sagemaker_submit_directory` (JSON-quoted, as
the SDK encodes them), the region and the log level. The image's training toolkit downloads and unpacks the
bundle, installs requirements.txt and runs `python finetune.py --name value ...`.

Before either: a gated Hub model needs the Hugging Face token's secret (HF_TOKEN_SECRET_ID; only its name
travels, as the hyperparameter `hf_token_secret`, and the trainer reads the token from Secrets Manager), and
a GPU instance type needs a training quota of at least 1 (services.training.quotas).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from services.training.catalog import BaseModelEntry, Catalog
from shared.s3 import sse_args

log = logging.getLogger(__name__)

LAUNCH_MODES = ("image", "script")
TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainer_image"
SOURCE_FILES = ("finetune.py", "requirements.txt")  # and every module of TRAINER_PACKAGE, beside them
TRAINER_PACKAGE = "llmt_trainer"
PROGRAM = "finetune.py"
HF_TOKEN_SECRET_PARAM = "hf_token_secret"  # noqa: S105 - the hyperparameter's name, not a secret
LOG_LEVEL_INFO = 20


class LaunchRefused(Exception):
    """The job cannot be launched as configured; it fails with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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

    async def ensure_uploaded(self, s3: Any, bucket: str, kms_key_id: str | None) -> str:
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


def framework_image(catalog: Catalog, region: str, gpu: bool) -> str:
    table = catalog.framework_images
    uri = table.uri(region, gpu) if table else None
    if uri is None:
        raise LaunchRefused("framework_image_unavailable",
                            f"LAUNCH_MODE=script has no framework training image for region {region} in the "
                            "catalog (framework_images.accounts); add the region or use LAUNCH_MODE=image.")
    return uri


def needs_hub_token(base: BaseModelEntry) -> bool:
    """A gated model downloaded from the Hub; a copy in our bucket (the `model` channel) needs none."""
    return base.gated and not base.artifact_prefix and bool(base.hf_repo)


async def prepare_request(deps: Any, job: Any, base: BaseModelEntry, request: dict[str, Any]) -> dict[str, Any]:
    """The request to send for this launch (changed in place), or LaunchRefused."""
    cfg = deps.launch
    hyperparameters = request["HyperParameters"]
    if needs_hub_token(base):
        if not cfg.hf_token_secret_id:
            raise LaunchRefused("gated_model_needs_token",
                                f"Model {base.id} is gated on the Hugging Face Hub and this deployment has no "
                                "Hugging Face token configured: store a token with access to it in AWS Secrets "
                                "Manager and set HF_TOKEN_SECRET_ID to the secret's name or ARN.")
        hyperparameters[HF_TOKEN_SECRET_PARAM] = cfg.hf_token_secret_id
    instance = deps.catalog.instance(job.instance_type)
    gpu = bool(instance and instance.gpus)
    if gpu and deps.quotas is not None:
        check = await deps.quotas.check(job.instance_type, bool(job.spot))
        if check.outcome == "insufficient":
            raise LaunchRefused("insufficient_quota", check.message)
    if cfg.launch_mode == "script":
        submit_directory = await deps.sources.ensure_uploaded(deps.s3, cfg.bucket, cfg.kms_key_id)
        request["AlgorithmSpecification"]["TrainingImage"] = framework_image(deps.catalog, cfg.region, gpu)
        hyperparameters.update({
            "sagemaker_program": json.dumps(PROGRAM),
            "sagemaker_submit_directory": json.dumps(submit_directory),
            "sagemaker_region": json.dumps(cfg.region),
            "sagemaker_container_log_level": json.dumps(LOG_LEVEL_INFO),
            "sagemaker_job_name": json.dumps(job.job_id),
        })
    return request
