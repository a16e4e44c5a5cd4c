"""What happens for each training command and event."""

from __future__ import annotations

import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from botocore.exceptions import ClientError

from services.training import estimates, events, results
from services.training import hyperparameters as hparams
from services.training.catalog import BaseModelEntry, Catalog
from services.training.launch import LaunchRefused, SourceBundle, prepare_request
from services.training.models import TERMINAL, CreateJob, EstimateRequest, FileView, Hyperparameters, Job
from services.training.store import JobsStore
from shared.consumer import RetryLater
from shared.errors import InvalidRequest, NotFound
from shared.events import SAGEMAKER_STATE_CHANGE, Envelope, new_event
from shared.logging import bound_request_id, current_request_id
from shared.s3 import delete_object_versions

log = logging.getLogger(__name__)
_ALPHABET = string.ascii_letters + string.digits
BASE_LEARNING_RATE = hparams.BASE_LEARNING_RATE
MIN_TRAINING_EXAMPLES = 10  # OpenAI's rule: fewer fail the job (not the request) with invalid_n_examples
FILE_WAIT_RETRIES = 20  # a launch waits this many retries (1 s, 2 s, 4 s ... 10 s) for its file's validation

METRIC_DEFINITIONS = [
    {"Name": "train_loss", "Regex": r'"train_loss": ([0-9.eE+-]+)'},
    {"Name": "valid_loss", "Regex": r'"valid_loss": ([0-9.eE+-]+)'},
    {"Name": "learning_rate", "Regex": r'"learning_rate": ([0-9.eE+-]+)'},
    {"Name": "trained_tokens", "Regex": r'"trained_tokens": ([0-9]+)'},
]


class EventPublisher(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...


class CommandSender(Protocol):
    async def send(self, envelope: Envelope) -> None: ...


@dataclass
class LaunchConfig:
    bucket: str
    role_arn: str
    image_uri: str
    instance_type: str
    max_runtime_s: int
    kms_key_id: str | None = None  # S3_KMS_KEY_ID: SSE-KMS for what training writes, else SSE-S3
    launch_mode: str = "image"  # LAUNCH_MODE: image (image_uri) or script (framework image + our source)
    region: str = "us-east-1"  # script mode's framework image and sagemaker_region
    hf_token_secret_id: str | None = None  # HF_TOKEN_SECRET_ID: the secret the trainer reads for gated models


@dataclass
class Deps:
    jobs: JobsStore
    catalog: Catalog
    events: EventPublisher
    commands: CommandSender
    sagemaker: Any
    launch: LaunchConfig
    s3: Any = None
    throughput: Any = None  # throughput.ThroughputStore: measured speed per (model, instance type), for estimates
    quotas: Any = None  # quotas.QuotaChecker: GPU launches check the training quota first; None skips the check
    sources: SourceBundle = field(default_factory=SourceBundle)  # script mode's sourcedir.tar.gz
    logs: Any = None  # CloudWatch Logs: the job page's log tail
    log_group: str = "/aws/sagemaker/TrainingJobs"


def _id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _event_id() -> str:
    # Sortable by time, so a job's events list newest first with one query.
    return f"ftevent-{time.time_ns() // 1000:016d}{secrets.token_hex(3)}"


async def record_event(deps: Deps, job: Job, message: str, level: str = "info",
                       data: dict[str, Any] | None = None, type_: str = "message") -> None:
    await deps.jobs.add_event(job.job_id, {"id": _event_id(), "created_at": int(time.time()), "level": level,
                                           "message": message, "type": type_, "data": data})


async def _announce(deps: Deps, job: Job, status: str, **extra: Any) -> None:
    data = {"job_id": job.job_id, "user_id": job.user_id, "status": status, "model": job.model, **extra}
    await deps.events.publish(new_event(events.JOB_PREFIX + status, data, user_id=job.user_id))


# ---- API commands -------------------------------------------------------------------------------------------

def _base_model(deps: Deps, model: str) -> BaseModelEntry:
    base = deps.catalog.model(model)
    if base is None:
        raise InvalidRequest(f"Model {model!r} is not available for fine-tuning. "
                             "GET /api/catalog lists the base models.", param="model", code="model_not_available")
    return base


async def _estimate(deps: Deps, user_id: str, base: BaseModelEntry, requested: Hyperparameters,
                    instance_type: str | None, spot: bool, training_file: str, seed: int | None = None,
                    ) -> dict[str, Any]:
    """The estimate for a validated training file of this caller's (a 400 naming training_file otherwise)."""
    instance = estimates.choose_instance(deps.catalog, base, instance_type)
    hparams.check(requested, base)
    view = await deps.jobs.get_file(training_file)
    if view is None or view.user_id != user_id or view.status == "deleted":
        raise InvalidRequest(f"Training file {training_file} was not found.", param="training_file",
                             code="invalid_training_file")
    if view.status != "processed":
        detail = "is still being validated" if view.status == "uploaded" else f"failed validation: {view.error}"
        raise InvalidRequest(f"Training file {training_file} {detail}; estimates need its statistics.",
                             param="training_file", code="file_not_ready" if view.status == "uploaded"
                             else "invalid_training_file")
    examples = view.examples or 0
    resolved = hparams.resolve(requested, examples, base, seed if seed is not None else 0)
    tps, overhead, source = await estimates.tokens_per_second(deps.catalog, base, instance, deps.throughput)
    return estimates.estimate(catalog=deps.catalog, base=base, instance=instance, hyperparameters=resolved,
                              examples=examples, file_tokens=view.estimated_tokens, tokens_per_s=tps,
                              overhead_s=overhead, source=source, spot=spot)


async def estimate_job(cmd: EstimateRequest, user_id: str, deps: Deps) -> dict[str, Any]:
    base = _base_model(deps, cmd.model)
    return await _estimate(deps, user_id, base, cmd.requested_hyperparameters(), cmd.instance_type, cmd.spot,
                           cmd.training_file)


async def dry_run_job(cmd: CreateJob, user_id: str, deps: Deps) -> dict[str, Any]:
    """`dry_run: true`: the estimate and the stopping condition a real create would use; no job is made."""
    base = _base_model(deps, cmd.model)
    body = await _estimate(deps, user_id, base, cmd.requested_hyperparameters(), cmd.instance_type, cmd.spot,
                           cmd.training_file, cmd.seed)
    instance = estimates.choose_instance(deps.catalog, base, cmd.instance_type)
    stop = estimates.budget_stopping_condition(cmd.max_cost_usd, instance, cmd.spot, deps.launch.max_runtime_s)
    return {**body, "dry_run": True, "max_cost_usd": cmd.max_cost_usd, "stopping_condition": stop,
            "within_budget": cmd.max_cost_usd is None or body["estimated_cost_usd"] <= cmd.max_cost_usd}


async def create_job(cmd: CreateJob, user_id: str, deps: Deps) -> Job:
    base = _base_model(deps, cmd.model)
    instance = estimates.choose_instance(deps.catalog, base, cmd.instance_type)
    requested = cmd.requested_hyperparameters()
    hparams.check(requested, base, cmd.validation_file)
    estimates.budget_stopping_condition(cmd.max_cost_usd, instance, cmd.spot, deps.launch.max_runtime_s)
    for param in ("training_file", "validation_file"):
        file_id = getattr(cmd, param)
        if file_id is None:
            continue
        view = await deps.jobs.get_file(file_id)
        # Unknown (or not yet projected) files are checked again by the worker; a known bad one fails now.
        if view is not None and view.user_id == user_id:
            if view.purpose != "fine-tune":
                raise InvalidRequest(f"File {file_id} has purpose {view.purpose!r}; it must be 'fine-tune'.",
                                     param=param, code="invalid_file_purpose")
            if view.status == "error":
                raise InvalidRequest(f"File {file_id} failed validation: {view.error}", param=param,
                                     code="invalid_training_file")
            if view.status == "deleted":
                raise InvalidRequest(f"File {file_id} was deleted.", param=param, code="invalid_training_file")
    now = datetime.now(UTC)
    seed = cmd.seed if cmd.seed is not None else (
        int(requested.seed) if requested.seed != "auto" else secrets.randbelow(2**31))
    job = Job(job_id=_id("ftjob-"), user_id=user_id, created_at=now.isoformat(timespec="microseconds"),
              created_at_unix=int(now.timestamp()), model=base.id, training_file=cmd.training_file,
              validation_file=cmd.validation_file, hyperparameters=requested.model_dump(), suffix=cmd.suffix,
              seed=seed, metadata=cmd.metadata, instance_type=instance.id, spot=cmd.spot,
              max_cost_usd=cmd.max_cost_usd,
              correlation_id=current_request_id())
    await deps.jobs.create(job)
    await record_event(deps, job, f"Created fine-tuning job: {job.job_id}")
    await deps.commands.send(new_event(events.LAUNCH_REQUESTED, {"job_id": job.job_id}, user_id=user_id))
    await _announce(deps, job, "created")
    return job


async def get_job(job_id: str, user_id: str, deps: Deps) -> Job:
    job = await deps.jobs.get(job_id) if job_id.startswith("ftjob-") else None
    if job is None or job.user_id != user_id:  # another user's job does not exist for this caller
        raise NotFound(f"No fine-tuning job found with id {job_id!r}.", param="fine_tuning_job_id")
    return job


async def list_jobs(user_id: str, deps: Deps, limit: int, after: str | None) -> tuple[list[Job], bool]:
    after_job = await get_job(after, user_id, deps) if after else None
    return await deps.jobs.list_for_user(user_id, limit, after_job)


# ---- worker: files projection -------------------------------------------------------------------------------

async def on_file_event(envelope: Envelope, deps: Deps) -> None:
    d = envelope.data
    status = {"file.uploaded": "uploaded", "file.validated": "processed", "file.rejected": "error",
              "file.deleted": "deleted"}[envelope.type]
    await deps.jobs.put_file(FileView(file_id=d["file_id"], user_id=d["user_id"], status=status,
                                      purpose=d.get("purpose", ""), s3_uri=d.get("s3_uri", ""),
                                      examples=d.get("examples"), error=d.get("error"),
                                      normalized_uri=d.get("normalized_uri"), example_type=d.get("example_type"),
                                      estimated_tokens=d.get("estimated_tokens")))


# ---- worker: launch ---------------------------------------------------------------------------------------

def resolve_hyperparameters(requested: Hyperparameters, examples: int, base: BaseModelEntry | None = None,
                            seed: int | None = None) -> dict[str, Any]:
    """'auto' becomes a value: OpenAI's cookbook heuristic for epochs, a small batch, the trainer's defaults."""
    return hparams.resolve(requested, examples, base, seed)


async def _fail(deps: Deps, job: Job, code: str, message: str, param: str | None = None) -> None:
    error = {"code": code, "message": message, "param": param}
    if await deps.jobs.transition(job.job_id, "failed", ("validating_files", "queued", "running"),
                                  error=error, finished_at=int(time.time())):
        await record_event(deps, job, message, level="error", data={"error_code": code, "error_param": param})
        await _announce(deps, job, "failed", error=error)


async def launch_job(envelope: Envelope, deps: Deps) -> None:
    job = await deps.jobs.get(str(envelope.data["job_id"]))
    if job is None or job.status in TERMINAL or job.status == "running":
        return  # nothing to do: a repeated command is harmless
    if job.status == "validating_files":
        view = await _validated_file(deps, job, envelope, "training_file")
        if view is None:
            return
        if view.status != "processed":
            await _fail(deps, job, "invalid_training_file",
                        f"The job failed due to an invalid training file. {view.error or 'File is not usable.'}",
                        "training_file")
            return
        if (view.examples or 0) < MIN_TRAINING_EXAMPLES:
            await _fail(deps, job, "invalid_n_examples", f"Training file has {view.examples or 0} example(s), but "
                        f"must have at least {MIN_TRAINING_EXAMPLES} examples", "training_file")
            return
        if view.example_type == "preference":
            await _fail(deps, job, "invalid_training_file", "The job failed due to an invalid training file. It "
                        "holds preference pairs, which need DPO training; this trainer does supervised fine-tuning "
                        "only.", "training_file")
            return
        validation_ok, validation_uri = await _validation_uri(deps, job, envelope)
        if not validation_ok:
            return
        await record_event(deps, job, f"Validating training file: {job.training_file}")
        resolved = resolve_hyperparameters(Hyperparameters.model_validate(job.hyperparameters), view.examples or 0,
                                           deps.catalog.model(job.model), job.seed)
        if not await deps.jobs.transition(job.job_id, "queued", ("validating_files",), hyperparameters=resolved):
            return
        job.hyperparameters, job.status = resolved, "queued"
        await record_event(deps, job, "Files validated, moving job to queued state")
        await _announce(deps, job, "queued")
        view_uri = view.train_uri
    else:  # queued: a previous delivery got this far; make sure SageMaker has the job
        view_or_none = await deps.jobs.get_file(job.training_file)
        view_uri = view_or_none.train_uri if view_or_none else ""
        validation_view = await deps.jobs.get_file(job.validation_file) if job.validation_file else None
        validation_uri = validation_view.train_uri if validation_view else None
    base = deps.catalog.model(job.model)
    assert base is not None
    await _create_training_job(deps, job, base, view_uri, validation_uri)


async def _validated_file(deps: Deps, job: Job, envelope: Envelope,
                          param: Literal["training_file", "validation_file"]) -> FileView | None:
    """The job's file as files last announced it, once validated: until then the command is retried later
    (files validates asynchronously); a file never heard of, or another user's, fails the job naming `param`
    (None)."""
    file_id = str(getattr(job, param))
    what = param.replace("_", " ")
    view = await deps.jobs.get_file(file_id)
    if view is None or view.user_id != job.user_id or view.status == "uploaded":
        if envelope.retries < FILE_WAIT_RETRIES:
            raise RetryLater(f"{what} {file_id} not validated yet", delay_s=min(10, 2 ** envelope.retries))
    if view is None or view.user_id != job.user_id:
        await _fail(deps, job, f"invalid_{param}", f"{what.capitalize()} {file_id} was not found.", param)
        return None
    return view


async def _validation_uri(deps: Deps, job: Job, envelope: Envelope) -> tuple[bool, str | None]:
    """(usable, its examples' URI): no validation file is usable; one still validating waits like the training
    file; an unusable one fails the job naming validation_file."""
    if not job.validation_file:
        return True, None
    view = await _validated_file(deps, job, envelope, "validation_file")
    if view is None:
        return False, None
    if view.status != "processed" or view.example_type == "preference":
        reason = view.error or ("It holds preference pairs." if view.example_type == "preference"
                                else "File is not usable.")
        await _fail(deps, job, "invalid_validation_file",
                    f"The job failed due to an invalid validation file. {reason}", "validation_file")
        return False, None
    return True, view.train_uri


def checkpoint_uri(bucket: str, user_id: str, job_id: str) -> str:
    return f"s3://{bucket}/training-jobs/{user_id}/{job_id}/checkpoints/"


def merged_model_key(user_id: str, job_id: str) -> str:
    """Beside SageMaker's `{job}/output/model.tar.gz` (the adapter): the trainer uploads the merged model here."""
    return f"training-jobs/{user_id}/{job_id}/output/merged-model.tar.gz"


def training_job_request(job: Job, base: BaseModelEntry, train_uri: str, cfg: LaunchConfig,
                         catalog: Catalog | None = None, validation_uri: str | None = None) -> dict[str, Any]:
    hyperparameters = hparams.sagemaker_hyperparameters(job.hyperparameters, base, job.seed)
    if hyperparameters.get("merge_adapter") == "true":  # its own artifact: model.tar.gz stays the small adapter
        hyperparameters["merged_model_uri"] = f"s3://{cfg.bucket}/{merged_model_key(job.user_id, job.job_id)}"
    channels = [{"ChannelName": "train", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": train_uri, "S3DataDistributionType": "FullyReplicated"}}}]
    if validation_uri:  # the trainer evaluates it after every epoch (valid_loss)
        channels.append({"ChannelName": "validation", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": validation_uri, "S3DataDistributionType": "FullyReplicated"}}})
    if base.artifact_prefix:
        channels.append({"ChannelName": "model", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{cfg.bucket}/{base.artifact_prefix}",
            "S3DataDistributionType": "FullyReplicated"}}})
    elif base.hf_repo:
        hyperparameters["model_id"] = base.hf_repo
    return {
        "TrainingJobName": job.job_id,
        "AlgorithmSpecification": {"TrainingImage": cfg.image_uri, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_DEFINITIONS},
        "RoleArn": cfg.role_arn,
        "HyperParameters": hyperparameters,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{cfg.bucket}/training-jobs/{job.user_id}/",
                             **({"KmsKeyId": cfg.kms_key_id} if cfg.kms_key_id else {})},
        "ResourceConfig": {"InstanceType": job.instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": _stopping_condition(job, cfg, catalog),
        **({"EnableManagedSpotTraining": True} if job.spot else {}),
        # The trainer's SM_CHECKPOINT_DIR, synced here: GET .../checkpoints lists it.
        "CheckpointConfig": {"S3Uri": checkpoint_uri(cfg.bucket, job.user_id, job.job_id)},
        "Tags": [{"Key": "llm-tuner:user", "Value": job.user_id}, {"Key": "llm-tuner:job", "Value": job.job_id}],
    }


def _stopping_condition(job: Job, cfg: LaunchConfig, catalog: Catalog | None) -> dict[str, int]:
    instance = catalog.instance(job.instance_type) if catalog else None
    if instance is None:  # a type the catalog no longer lists: no budget arithmetic possible, the plain cap
        condition = {"MaxRuntimeInSeconds": cfg.max_runtime_s}
        if job.spot:
            condition["MaxWaitTimeInSeconds"] = cfg.max_runtime_s
        return condition
    return estimates.budget_stopping_condition(job.max_cost_usd, instance, job.spot, cfg.max_runtime_s)


async def _create_training_job(deps: Deps, job: Job, base: BaseModelEntry, train_uri: str,
                               validation_uri: str | None = None) -> None:
    try:
        request = await prepare_request(deps, job, base, training_job_request(
            job, base, train_uri, deps.launch, deps.catalog, validation_uri))
    except LaunchRefused as exc:
        await _fail(deps, job, exc.code, str(exc))
        return
    try:
        await deps.sagemaker.create_training_job(**request)
    except ClientError as exc:
        code = exc.response["Error"]["Code"]
        if code == "ResourceInUse":
            return  # the name is the job id: SageMaker already has it
        if code in ("ValidationException", "ResourceLimitExceeded", "AccessDeniedException"):
            await _fail(deps, job, "launch_failed", f"SageMaker refused the training job: "
                        f"{exc.response['Error'].get('Message', code)}")
            return
        raise
    await deps.jobs.set_fields(job.job_id, sagemaker_job_name=job.job_id)
    log.info("training job launched", extra={"job_id": job.job_id})
    current = await deps.jobs.get(job.job_id)
    if current is not None and current.status == "cancelled":  # cancelled while this launch was in flight
        await stop_quietly(deps, job.job_id)


async def stop_quietly(deps: Deps, job_id: str) -> bool:
    """StopTrainingJob; False when SageMaker has no such job or it is already over (ValidationException)."""
    try:
        await deps.sagemaker.stop_training_job(TrainingJobName=job_id)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ValidationException":
            raise
        log.info("stop refused", extra={"job_id": job_id, "error": str(exc)})
        return False
    return True


# ---- worker: SageMaker state changes --------------------------------------------------------------------

def fine_tuned_model_name(job: Job) -> str:
    return f"ft:{job.model}:{job.user_id}:{job.suffix or ''}:{job.job_id.removeprefix('ftjob-')[:8]}"


def _final_metric(detail: dict[str, Any], name: str) -> float | None:
    for metric in detail.get("FinalMetricDataList") or []:
        if metric.get("MetricName") == name:
            return float(metric["Value"])
    return None


async def on_sagemaker_state(envelope: Envelope, deps: Deps) -> None:
    job = await deps.jobs.get(str(envelope.data.get("TrainingJobName", "")))
    if job is None:
        return  # not one of ours
    with bound_request_id(job.correlation_id):
        await _record_secondary_status(deps, job, envelope.data)
        if envelope.data.get("TrainingJobStatus") in ("Completed", "Failed", "Stopped") and job.status not in TERMINAL:
            await _read_last_metrics(job, envelope.data, deps)
        await _apply_sagemaker_state(job, envelope.data, deps)


async def _read_last_metrics(job: Job, detail: dict[str, Any], deps: Deps) -> None:
    """The steps logged since the reconciler's last poll, read before the job ends (it reads only active
    jobs): a short job's chart is complete even when it ran between two polls."""
    if deps.logs is None:
        return
    from services.training import metrics  # metrics builds on this module

    started = detail.get("TrainingStartTime")
    started_s = started / 1000 if isinstance(started, (int, float)) and not isinstance(started, bool) else None
    try:
        await metrics.poll(deps, job, started_s)
    except ClientError:  # the logs are a nicety here; the job's end is not
        log.warning("could not read the last metrics", extra={"job_id": job.job_id}, exc_info=True)


async def _record_secondary_status(deps: Deps, job: Job, detail: dict[str, Any]) -> None:
    """SageMaker's SecondaryStatus (Starting, Downloading, Training, Uploading...) on the job; a change is an event."""
    secondary = detail.get("SecondaryStatus")
    if not secondary or secondary == job.secondary_status:
        return
    modified = detail.get("LastModifiedTime")  # epoch ms in events (and in the reconciler's details)
    at_ms = int(modified) if isinstance(modified, (int, float)) and not isinstance(modified, bool) else None
    if await deps.jobs.set_secondary_status(job.job_id, str(secondary), at_ms):
        job.secondary_status = str(secondary)
        message = _secondary_message(detail, str(secondary))
        await record_event(deps, job, message, data={"secondary_status": secondary})


def _secondary_message(detail: dict[str, Any], secondary: str) -> str:
    for transition in reversed(detail.get("SecondaryStatusTransitions") or []):
        if transition.get("Status") == secondary and transition.get("StatusMessage"):
            return f"{secondary}: {transition['StatusMessage']}"
    return f"Training job status: {secondary}"


async def _apply_sagemaker_state(job: Job, detail: dict[str, Any], deps: Deps) -> None:
    status = detail.get("TrainingJobStatus")
    now = int(time.time())
    if status == "InProgress":
        if await deps.jobs.transition(job.job_id, "running", ("queued",)):
            await record_event(deps, job, "Fine-tuning job started")
            await _announce(deps, job, "running")
    elif status == "Completed":
        artifact = (detail.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        tokens = _final_metric(detail, "trained_tokens")
        name = fine_tuned_model_name(job)
        if job.status in TERMINAL:
            return  # a repeated Completed: the results were written the first time
        # Written before the job says succeeded, so the job never names a results file that does not exist.
        result_file = await results.write_results(deps.s3, deps.launch.bucket, job.user_id, job.job_id, artifact,
                                                  deps.launch.kms_key_id)
        if await deps.jobs.transition(job.job_id, "succeeded", ("queued", "running"), finished_at=now,
                                      fine_tuned_model=name, model_artifact=artifact,
                                      trained_tokens=int(tokens) if tokens is not None else None,
                                      result_files=[result_file["file_id"]]):
            await record_event(deps, job, f"New fine-tuned model created: {name}")
            await record_event(deps, job, "The job has successfully completed")
            await _announce(deps, job, "succeeded", fine_tuned_model=name, model_artifact=artifact,
                            result_file=result_file)
            await _record_throughput(deps, job, detail, tokens)
    elif status == "Failed":
        await _fail(deps, job, "training_failed", str(detail.get("FailureReason") or "Training failed."))
    elif status == "Stopped":
        if detail.get("SecondaryStatus") == "MaxRuntimeExceeded":
            await _fail(deps, job, "max_runtime_exceeded", "The job reached its maximum run time and was stopped.")
        elif await deps.jobs.transition(job.job_id, "cancelled", ("validating_files", "queued", "running"),
                                        finished_at=now):
            await record_event(deps, job, "Fine-tuning job cancelled")
            await _announce(deps, job, "cancelled")


async def _record_throughput(deps: Deps, job: Job, detail: dict[str, Any], tokens: float | None) -> None:
    """A finished job's measured seconds per token feed the next estimates for its model and instance type."""
    seconds = detail.get("TrainingTimeInSeconds")
    if deps.throughput is None or not seconds or not tokens:
        return
    try:
        await deps.throughput.record(job.model, job.instance_type, float(seconds), int(tokens))
    except ClientError as exc:  # an estimate input, never worth failing the job's completion over
        log.warning("throughput not recorded", extra={"job_id": job.job_id, "error": str(exc)})


async def delete_user_data(envelope: Envelope, deps: Deps) -> None:
    """A deleted account's jobs go with it: running ones are stopped, records, events and artifacts removed."""
    user_id = str(envelope.data["user_id"])
    for job in await deps.jobs.all_for_user(user_id):
        if job.status in ("queued", "running"):
            try:
                await deps.sagemaker.stop_training_job(TrainingJobName=job.job_id)
            except ClientError as exc:  # not launched yet, or already over: nothing to stop
                log.info("stop on user deletion refused", extra={"job_id": job.job_id, "error": str(exc)})
        await deps.jobs.delete_job(job.job_id)
    await deps.jobs.delete_files_of(user_id)
    await delete_object_versions(deps.s3, deps.launch.bucket, f"training-jobs/{user_id}/")
    log.info("user's training data removed", extra={"user_id": user_id})


EVENT_HANDLERS = {
    events.USER_DELETED: delete_user_data,
    events.LAUNCH_REQUESTED: launch_job,
    SAGEMAKER_STATE_CHANGE: on_sagemaker_state,
    **{t: on_file_event for t in events.FILE_EVENTS},
}
