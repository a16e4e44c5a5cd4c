"""Launching a job: the `training.job.launch_requested` command (launch_job), from `validating_files` to a
SageMaker training job.

The launch waits on its files' validation by the event, not by a poll: while a file is not settled (validated,
rejected or deleted) the command is simply done, the job left in validating_files; when the file settles, the
files projection (file_projection.py) finds the jobs in validating_files that name it and sends their command
again, however long the validation took. Then: a usable training file (and validation file) queues the job with
its hyperparameters resolved; a rejected or deleted one fails it (`invalid_training_file` /
`invalid_validation_file`), as does another user's file or one still unknown UNKNOWN_FILE_GRACE_S after the job's
creation. A queued job gets its CreateTrainingJob request (training_job_request.py) with what a launch adds
before it is sent, below; the training job's name is the job id, so a repeated command is harmless, and a launch
that finds the job cancelled, or deleted with its account, meanwhile stops its own training job.

What a launch adds to the CreateTrainingJob request before it is sent:

LAUNCH_MODE=image (the default): the request as built, TrainingImage = TRAINER_IMAGE_URI (our own image).
LAUNCH_MODE=script: SageMaker script mode. The trainer's source bundle (source_bundle.py) is in the bucket, and
the job runs a framework image (the catalog's dated DLC table) with the hyperparameters the sagemaker SDK sets:
`sagemaker_program` and `sagemaker_submit_directory` (JSON-quoted, as the SDK encodes them), the region and the
log level. The image's training toolkit downloads and unpacks the bundle, installs requirements.txt and runs
`python finetune.py --name value ...`.

Before either: a gated Hub model needs the Hugging Face token's secret (HF_TOKEN_SECRET_ID; only its name
travels, as the hyperparameter `hf_token_secret`, and the trainer reads the token from Secrets Manager), and
a GPU instance type needs a training quota of at least 1 (services.training.quotas).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from botocore.exceptions import ClientError

from services.training import hyperparameters as hparams
from services.training.catalog import BaseModelEntry, Catalog
from services.training.deps import Deps
from services.training.job_events import announce, fail_job, record_event
from services.training.models import DpoHyperparameters, FileView, Hyperparameters, Job, layout_mismatch
from services.training.sagemaker_stop import stop_training_job
from services.training.source_bundle import PROGRAM
from services.training.training_job_request import training_job_request
from shared.contracts.training_events import LaunchRequested
from shared.logging import bound_request_id

log = logging.getLogger(__name__)

HF_TOKEN_SECRET_PARAM = "hf_token_secret"  # noqa: S105 - the hyperparameter's name, not a secret
LOG_LEVEL_INFO = 20


class LaunchRefused(Exception):
    """The job cannot be launched as configured; it fails with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


async def prepare_request(deps: Deps, job: Job, base: BaseModelEntry, request: dict[str, Any]) -> dict[str, Any]:
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
        check = await deps.quotas.check(job.instance_type, bool(job.spot), job.instance_count)
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


# ---- the launch command ---------------------------------------------------------------------------------------

MIN_TRAINING_EXAMPLES = 10  # OpenAI's rule: fewer fail the job (not the request) with invalid_n_examples
# files announces an upload within seconds of answering it: a file still unknown this long after the job was
# created is not coming (the reconciler sends a stuck job's launch again, which then fails it).
UNKNOWN_FILE_GRACE_S = 300
FileParam = Literal["training_file", "validation_file"]


async def launch_job(command: LaunchRequested, deps: Deps) -> None:
    """Sent by create, again by the files projection when a file this launch waits on settles, and by the
    reconciler for a job stuck without a SageMaker job. Any of them may repeat: each step is conditional."""
    job = await deps.jobs.get(command.job_id)
    if job is None or job.status not in ("validating_files", "queued"):
        return  # nothing to do: a repeated command is harmless
    with bound_request_id(job.correlation_id):
        if job.status == "validating_files":
            uris = await _queue(deps, job)
        else:  # queued: a previous delivery got this far; make sure SageMaker has the job
            uris = await _validated_uris(deps, job)
        if uris is not None:
            await create_training_job(deps, job, *uris)


async def _queue(deps: Deps, job: Job) -> tuple[str, str | None] | None:
    """validating_files -> queued with the hyperparameters resolved, once its files are validated and usable: the
    train and validation channels' URIs. None when the launch stops here (waiting for a file, or the job failed)."""
    training = await _settled_file(deps, job, "training_file")
    if training is None or not await _usable_training_file(deps, job, training):
        return None
    validation_uri = None
    if job.validation_file:
        validation = await _settled_file(deps, job, "validation_file")
        if validation is None or not await _usable_validation_file(deps, job, validation):
            return None
        validation_uri = validation.train_uri
    await record_event(deps, job, f"Validating training file: {job.training_file}")
    requested = (DpoHyperparameters if job.method == "dpo" else Hyperparameters).model_validate(job.hyperparameters)
    resolved = hparams.resolve(requested, training.examples or 0,
                               deps.catalog.model(job.base), job.seed,
                               instance=deps.catalog.cluster(job.instance_type, job.instance_count),
                               file_tokens=training.estimated_tokens)
    if not await deps.jobs.transition(job.job_id, "queued", only_from="validating_files", hyperparameters=resolved):
        return None
    job.hyperparameters, job.status = resolved, "queued"
    await record_event(deps, job, "Files validated, moving job to queued state")
    await announce(deps, job, "queued")
    return training.train_uri, validation_uri


async def _validated_uris(deps: Deps, job: Job) -> tuple[str, str | None]:
    training = await deps.jobs.get_file(job.training_file)
    validation = await deps.jobs.get_file(job.validation_file) if job.validation_file else None
    return training.train_uri if training else "", validation.train_uri if validation else None


def _unsettled(view: FileView | None, job: Job) -> bool:
    """Not heard of yet, or the caller's file still validating: what the launch waits for."""
    return view is None or (view.user_id == job.user_id and view.status == "uploaded")


async def _settled_file(deps: Deps, job: Job, param: FileParam) -> FileView | None:
    """The job's file once files has settled it (validated, rejected or deleted). None when the launch stops here:
    the job waits for the file (nothing to write: a job in validating_files naming the file is what the files
    projection wakes when the file settles, and it settles after this read, or this read would have seen it), or
    the file is another user's, or never came, and the job failed."""
    file_id = job.validation_file if param == "validation_file" else job.training_file
    assert file_id is not None
    view = await deps.jobs.get_file(file_id)
    if _unsettled(view, job) and (view is not None or time.time() - job.created_at_unix < UNKNOWN_FILE_GRACE_S):
        log.info("launch waits for a file's validation", extra={"job_id": job.job_id, "file_id": file_id})
        return None
    if view is None or view.user_id != job.user_id:
        what = param.replace("_", " ").capitalize()
        await fail_job(deps, job, f"invalid_{param}", f"{what} {file_id} was not found.", param)
        return None
    return view


async def _usable_training_file(deps: Deps, job: Job, view: FileView) -> bool:
    if view.status != "processed":
        await fail_job(deps, job, "invalid_training_file", "The job failed due to an invalid training file. "
                       f"{view.error or 'File is not usable.'}", "training_file")
        return False
    if (view.examples or 0) < MIN_TRAINING_EXAMPLES:
        await fail_job(deps, job, "invalid_n_examples", f"Training file has {view.examples or 0} example(s), but "
                       f"must have at least {MIN_TRAINING_EXAMPLES} examples", "training_file")
        return False
    mismatch = layout_mismatch(job.method, view.example_type)
    if mismatch:
        await fail_job(deps, job, "invalid_training_file", "The job failed due to an invalid training file. "
                       f"{mismatch}", "training_file")
        return False
    return True


async def _usable_validation_file(deps: Deps, job: Job, view: FileView) -> bool:
    mismatch = layout_mismatch(job.method, view.example_type)
    if view.status != "processed" or mismatch:
        reason = view.error or mismatch or "File is not usable."
        await fail_job(deps, job, "invalid_validation_file",
                       f"The job failed due to an invalid validation file. {reason}", "validation_file")
        return False
    return True


async def create_training_job(deps: Deps, job: Job, train_uri: str, validation_uri: str | None = None) -> None:
    """CreateTrainingJob for a queued job; SageMaker refusing it fails the job (`launch_failed`)."""
    base = deps.catalog.model(job.base)
    assert base is not None
    try:
        request = await prepare_request(deps, job, base, training_job_request(
            job, base, train_uri, deps.launch, deps.catalog, validation_uri))
    except LaunchRefused as exc:
        await fail_job(deps, job, exc.code, str(exc))
        return
    try:
        await deps.sagemaker.create_training_job(**request)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "ResourceInUse":
            return  # the name is the job id: SageMaker already has it
        if code in ("ValidationException", "ResourceLimitExceeded", "AccessDeniedException"):
            await fail_job(deps, job, "launch_failed", f"SageMaker refused the training job: "
                           f"{exc.response['Error'].get('Message', code)}")
            return
        raise
    await deps.jobs.set_fields(job.job_id, sagemaker_job_name=job.training_job_name())  # nothing when it is gone
    log.info("training job launched", extra={"job_id": job.job_id})
    # Read after the training job exists: a cancel, or the account's deletion (which removes the job, then stops
    # its training job), that happened while this launch was in flight either stopped it already or is seen here.
    current = await deps.jobs.get(job.job_id)
    if current is None or current.status == "cancelled":
        await stop_training_job(deps.sagemaker, job.training_job_name())
