"""The jobs API's commands (app.py routes each request here): create (or its dry run), estimate, list, retrieve,
list events, cancel.

Creating a job writes it (`validating_files`) and sends the launch command to training's own work queue
(launch.py takes it from there); nothing here calls SageMaker but cancel's StopTrainingJob.
"""

from __future__ import annotations

import secrets
import string
import time
from datetime import UTC, datetime
from typing import Any

from services.training import continuation, estimates, limits, pausing
from services.training import hyperparameters as hparams
from services.training.catalog import BaseModelEntry
from services.training.deps import Deps
from services.training.job_events import announce, record_event
from services.training.models import TERMINAL, CreateJob, EstimateRequest, Hyperparameters, Job, layout_mismatch
from services.training.parts import new_part
from services.training.sagemaker_stop import stop_training_job
from shared.contracts.training_events import LaunchRequested
from shared.envelope import new_event
from shared.errors import InvalidRequest, NotFound
from shared.logging import current_request_id

_ALPHABET = string.ascii_letters + string.digits
CANCEL_REQUESTED = "Job cancellation requested"
CANCELLED = "Fine-tuning job cancelled"


def _id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def _base_model(deps: Deps, model: str) -> BaseModelEntry:
    base = deps.catalog.model(model)
    if base is None:
        raise InvalidRequest(f"Model {model!r} is not available for fine-tuning. "
                             "GET /api/catalog lists the base models.", param="model", code="model_not_available")
    return base


# ---- estimates ----------------------------------------------------------------------------------------------

async def _estimate(deps: Deps, user_id: str, base: BaseModelEntry, requested: Hyperparameters,
                    instance_type: str | None, spot: bool, training_file: str, seed: int | None = None,
                    method: str = "supervised", instance_count: int = 1) -> dict[str, Any]:
    """The estimate for a validated training file of this caller's (a 400 naming training_file otherwise)."""
    hparams.check(requested, base)
    instance = estimates.choose_instance(deps.catalog, base, instance_type, requested, instance_count)
    limits.check_instance(deps.limits, instance)
    view = await deps.jobs.get_file(training_file)
    if view is None or view.user_id != user_id or view.status == "deleted":
        raise InvalidRequest(f"Training file {training_file} was not found.", param="training_file",
                             code="invalid_training_file")
    if view.status != "processed":
        detail = "is still being validated" if view.status == "uploaded" else f"failed validation: {view.error}"
        raise InvalidRequest(f"Training file {training_file} {detail}; estimates need its statistics.",
                             param="training_file", code="file_not_ready" if view.status == "uploaded"
                             else "invalid_training_file")
    _refuse_layout(training_file, "training_file", method, view.example_type)
    examples = view.examples or 0
    resolved = hparams.resolve(requested, examples, base, seed if seed is not None else 0, instance=instance,
                               file_tokens=view.estimated_tokens)
    tps, overhead, source = await estimates.tokens_per_second(deps.catalog, base, instance, deps.throughput)
    return estimates.estimate(catalog=deps.catalog, base=base, instance=instance, hyperparameters=resolved,
                              examples=examples, file_tokens=view.estimated_tokens, tokens_per_s=tps,
                              overhead_s=overhead, source=source, spot=spot, method=method)


def _refuse_method(cmd: CreateJob | EstimateRequest) -> None:
    if cmd.method_type() == "reinforcement":
        raise InvalidRequest("Reinforcement fine-tuning (method type 'reinforcement') is not supported yet; use "
                             "'supervised' or 'dpo'.", param="method.type", code="unsupported_method")


async def _start_of(cmd: CreateJob | EstimateRequest, user_id: str,
                    deps: Deps) -> tuple[BaseModelEntry, Hyperparameters, continuation.Start | None]:
    """The base model, the hyperparameters asked for (the starting adapter's LoRA settings kept) and the start."""
    _refuse_method(cmd)
    start = await continuation.resolve_start(cmd, user_id, deps)
    if start is None:
        return _base_model(deps, cmd.model), cmd.requested_hyperparameters(), None
    return start.base, continuation.with_adapter_settings(cmd.requested_hyperparameters(), start), start


async def estimate_job(cmd: EstimateRequest, user_id: str, deps: Deps) -> dict[str, Any]:
    """As a job would be estimated: on an `ft:` model or a checkpoint, the estimate of its base."""
    base, requested, _ = await _start_of(cmd, user_id, deps)
    return await _estimate(deps, user_id, base, requested, cmd.instance_type, cmd.spot, cmd.training_file,
                           method=cmd.method_type(), instance_count=cmd.instance_count)


async def dry_run_job(cmd: CreateJob, user_id: str, deps: Deps) -> dict[str, Any]:
    """`dry_run: true`: the estimate and the stopping condition a real create would use; no job is made."""
    base, requested, _ = await _start_of(cmd, user_id, deps)
    body = await _estimate(deps, user_id, base, requested, cmd.instance_type, cmd.spot,
                           cmd.training_file, cmd.seed, cmd.method_type(), cmd.instance_count)
    instance = estimates.choose_instance(deps.catalog, base, cmd.instance_type, requested, cmd.instance_count)
    stop = estimates.budget_stopping_condition(cmd.max_cost_usd, instance, cmd.spot, deps.launch.max_runtime_s)
    return {**body, "dry_run": True, "max_cost_usd": cmd.max_cost_usd, "stopping_condition": stop,
            "within_budget": cmd.max_cost_usd is None or body["estimated_cost_usd"] <= cmd.max_cost_usd}


# ---- create, read -------------------------------------------------------------------------------------------

def _no_such_file(file_id: str, param: str) -> InvalidRequest:
    what = "Training" if param == "training_file" else "Validation"
    return InvalidRequest(f"{what} file {file_id} was not found.", param=param, code=f"invalid_{param}")


def _refuse_layout(file_id: str, param: str, method: str, example_type: str | None) -> None:
    mismatch = layout_mismatch(method, example_type)
    if mismatch:
        raise InvalidRequest(f"File {file_id} cannot train this job: {mismatch}", param=param,
                             code=f"invalid_{param}")


def _refuse_file(file_id: str, param: str, purpose: str | None, status: str | None, error: str | None) -> None:
    if purpose != "fine-tune":
        raise InvalidRequest(f"File {file_id} has purpose {purpose!r}; it must be 'fine-tune'.",
                             param=param, code="invalid_file_purpose")
    if status == "error":
        raise InvalidRequest(f"File {file_id} failed validation: {error or 'see its report'}", param=param,
                             code=f"invalid_{param}")
    if status == "deleted":
        raise InvalidRequest(f"File {file_id} was deleted.", param=param, code=f"invalid_{param}")


async def _refuse_bad_files(cmd: CreateJob, user_id: str, bearer_token: str | None, deps: Deps) -> None:
    """A file that is not the caller's (unknown, or another user's) or is known to be unusable is a 400 now, as
    OpenAI answers. The projection decides what it knows; a file it has not heard of yet (uploaded a moment ago)
    is files' to confirm (files_directory.py). Usable files are still checked by the launch (their statistics)."""
    for param in ("training_file", "validation_file"):
        file_id = getattr(cmd, param)
        if file_id is None:
            continue
        view = await deps.jobs.get_file(file_id)
        if view is not None:
            if view.user_id != user_id:  # another user's file does not exist for this caller
                raise _no_such_file(file_id, param)
            _refuse_file(file_id, param, view.purpose, view.status, view.error)
            _refuse_layout(file_id, param, cmd.method_type(), view.example_type)
            continue
        seen = await deps.files.find(file_id, bearer_token) if deps.files and bearer_token else None
        if seen is None:
            continue  # files could not answer: the launch decides (launch.UNKNOWN_FILE_GRACE_S)
        if not seen.found:
            raise _no_such_file(file_id, param)
        _refuse_file(file_id, param, seen.purpose, seen.status, None)


async def create_job(cmd: CreateJob, user_id: str, deps: Deps, bearer_token: str | None = None) -> Job:
    """A new job, if its request is sound, its files are the caller's and the caller's limits allow it
    (`bearer_token`: the caller's own, for asking files about a file the projection does not know yet)."""
    base, requested, start = await _start_of(cmd, user_id, deps)
    hparams.check(requested, base, cmd.validation_file)
    instance = estimates.choose_instance(deps.catalog, base, cmd.instance_type, requested, cmd.instance_count)
    limits.check_instance(deps.limits, instance)
    stop = estimates.budget_stopping_condition(cmd.max_cost_usd, instance, cmd.spot, deps.launch.max_runtime_s)
    await _refuse_bad_files(cmd, user_id, bearer_token, deps)
    now = datetime.now(UTC)
    seed = cmd.seed if cmd.seed is not None else (
        int(requested.seed) if requested.seed != "auto" else secrets.randbelow(2**31))
    job_id = _id("ftjob-")
    job = Job(job_id=job_id, user_id=user_id, created_at=now.isoformat(timespec="microseconds"),
              created_at_unix=int(now.timestamp()), model=start.model if start else base.id, base_model=base.id,
              method=cmd.method_type(), start_adapter=start.adapter_uri if start else None,
              from_checkpoint=start.checkpoint if start else None, parts=new_part([], job_id, "start", None),
              training_file=cmd.training_file,
              validation_file=cmd.validation_file, hyperparameters=requested.model_dump(), suffix=cmd.suffix,
              seed=seed, metadata=cmd.metadata, instance_type=instance.id,
              instance_count=instance.count, spot=cmd.spot,
              max_cost_usd=cmd.max_cost_usd, correlation_id=current_request_id(),
              reserved_micros=limits.reserved_micros(instance, stop) if deps.usage else None)
    if deps.usage is not None:
        await deps.usage.create_within(job, deps.limits)
    else:
        await deps.jobs.create(job)
    await record_event(deps, job, f"Created fine-tuning job: {job.job_id}")
    await deps.commands.send(new_event(LaunchRequested(job_id=job.job_id), user_id=user_id))
    await announce(deps, job, "validating_files")
    return job


async def user_limits(user_id: str, deps: Deps) -> dict[str, Any]:
    usage = await deps.usage.usage(user_id) if deps.usage else limits.Usage()
    return limits.public_limits(deps.limits, usage)


async def get_job(job_id: str, user_id: str, deps: Deps) -> Job:
    job = await deps.jobs.get(job_id) if job_id.startswith("ftjob-") else None
    if job is None or job.user_id != user_id:  # another user's job does not exist for this caller
        raise NotFound(f"No fine-tuning job found with id {job_id!r}.", param="fine_tuning_job_id")
    return job


async def list_jobs(user_id: str, deps: Deps, limit: int, after: str | None) -> tuple[list[Job], bool]:
    after_job = await get_job(after, user_id, deps) if after else None
    return await deps.jobs.list_for_user(user_id, limit, after_job)


async def list_events(job_id: str, user_id: str, deps: Deps, limit: int, after: str | None,
                      event_type: str | None) -> tuple[list[dict[str, Any]], bool]:
    job = await get_job(job_id, user_id, deps)
    return await deps.jobs.list_events(job.job_id, limit, after, event_type)


# ---- pause, resume, retry (pausing.py) -----------------------------------------------------------------------

async def pause_job(job_id: str, user_id: str, deps: Deps) -> Job:
    await pausing.pause_job(await get_job(job_id, user_id, deps), deps)
    return await get_job(job_id, user_id, deps)


async def resume_job(job_id: str, user_id: str, deps: Deps, max_cost_usd: float | None = None) -> Job:
    await pausing.resume_job(await get_job(job_id, user_id, deps), deps, max_cost_usd)
    return await get_job(job_id, user_id, deps)


async def retry_job(job_id: str, user_id: str, deps: Deps, max_cost_usd: float | None = None) -> dict[str, Any]:
    retry = await pausing.retry_job(await get_job(job_id, user_id, deps), deps, max_cost_usd)
    return {**(await get_job(job_id, user_id, deps)).openai(), "retry": retry}


# ---- cancel -------------------------------------------------------------------------------------------------

def _finished(job: Job) -> InvalidRequest:
    return InvalidRequest(f"Job {job.job_id} has already finished ({job.status}) and cannot be cancelled.",
                          code="job_already_finished")


async def cancel_job(job_id: str, user_id: str, deps: Deps) -> Job:
    """`POST /v1/fine_tuning/jobs/{id}/cancel`.

    - validating_files / queued: `cancelled` at once, by a conditional write from the status just read; a training
      job SageMaker may already have (the launch can be in flight) is stopped, "not found" ignored, and a launch
      that lands after the write stops its own training job (launch.py).
    - running: StopTrainingJob, `cancel_requested_at` set; the job stays `running` until SageMaker's Stopped event
      moves it to `cancelled` (sagemaker_state.py), so every read of the job (retrieve, list, this answer) tells
      the same, true state and `finished_at` is set when it is really over.
    - pausing: SageMaker is stopping it already; `cancel_requested_at` set, so its Stopped event cancels it instead
      of pausing it (one that became paused meanwhile is read again and cancelled).
    - paused: `cancelled` at once (nothing runs).
    - succeeded / failed / cancelled: 400 `job_already_finished`.
    Either way `training.job.cancelled` is published once: by the one writer whose move to `cancelled` succeeds.
    """
    for _ in range(3):  # a state that moved under us is read again
        job = await get_job(job_id, user_id, deps)
        if job.status in TERMINAL:
            raise _finished(job)
        if job.status == "running":
            return await _cancel_running(job, deps)
        if job.status == "pausing":
            if job.cancel_requested_at is None:
                await deps.jobs.set_fields(job.job_id, cancel_requested_at=int(time.time()))
                await record_event(deps, job, CANCEL_REQUESTED)
                continue  # read again: a job that became paused meanwhile is cancelled by the next round
            return job
        if await deps.jobs.transition(job.job_id, "cancelled", only_from=job.status, finished_at=int(time.time())):
            if job.cancel_requested_at is None:
                await record_event(deps, job, CANCEL_REQUESTED)
            if job.status == "queued" or (job.status != "paused" and job.sagemaker_job_name):
                await stop_training_job(deps.sagemaker, job.training_job_name())  # SageMaker may have it already
            await record_event(deps, job, CANCELLED)
            await announce(deps, job, "cancelled")
            return await get_job(job_id, user_id, deps)
    return await get_job(job_id, user_id, deps)


async def _cancel_running(job: Job, deps: Deps) -> Job:
    if job.cancel_requested_at is not None:
        return job  # asked before: the Stopped event finishes it
    if not await stop_training_job(deps.sagemaker, job.training_job_name()):
        # SageMaker's job is already over; its Completed/Failed event is on its way and decides the outcome.
        raise InvalidRequest(f"Job {job.job_id} has already finished training and cannot be cancelled.",
                             code="job_already_finished")
    await deps.jobs.set_fields(job.job_id, cancel_requested_at=int(time.time()))
    await record_event(deps, job, CANCEL_REQUESTED)
    return await get_job(job.job_id, job.user_id, deps)
