"""SageMaker's state changes (EventBridge's "SageMaker Training Job State Change", or the reconciler's describe of
the same job) moved onto the job: InProgress -> running; Completed -> the results file, then succeeded, then the
measured speed for the next estimates; Failed -> failed; Stopped -> cancelled (or failed, past its maximum run
time). SageMaker's SecondaryStatus (Starting, Downloading, Training...) is kept on the job, a change an event.

Every move is a conditional write allowed by transitions.py, so a repeated or late event changes nothing.
"""

from __future__ import annotations

import logging
import time

from botocore.exceptions import ClientError

from services.training import artifacts, limits, metrics_from_logs, results_file
from services.training.catalog import throughput_key
from services.training.deps import Deps
from services.training.job_events import announce, fail_job, record_event
from services.training.models import TERMINAL, Job
from services.training.parts import Bill, job_id_of, mark_started
from shared.contracts.sagemaker_events import TrainingJobStateChanged
from shared.logging import bound_request_id
from shared.s3 import delete_object_versions

log = logging.getLogger(__name__)
ENDED = ("Completed", "Failed", "Stopped")
SUCCEEDED_MESSAGE = "The job has successfully completed"


def _number(value: object) -> float | None:
    """Epoch milliseconds and seconds arrive as numbers; anything else is unknown."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _final_metric(state: TrainingJobStateChanged, name: str) -> float | None:
    for metric in state.FinalMetricDataList:
        if metric.get("MetricName") == name:
            return float(metric["Value"])
    return None


async def on_sagemaker_state(state: TrainingJobStateChanged, deps: Deps) -> None:
    job = await deps.jobs.get(job_id_of(state.TrainingJobName))
    if job is None:
        await _after_deletion(state, deps)  # one of a deleted account's, or not one of ours
        return
    if state.TrainingJobName != job.training_job_name():
        return  # an earlier part's (late, or repeated): that part's end is already recorded
    with bound_request_id(job.correlation_id):
        await _record_secondary_status(deps, job, state)
        if state.TrainingJobStatus in ENDED and job.status not in TERMINAL:
            await _read_last_metrics(job, state, deps)
        await _apply(job, state, deps)


async def _after_deletion(state: TrainingJobStateChanged, deps: Deps) -> None:
    """A deleted account's training job that has ended: what SageMaker uploaded after the deletion (the model and
    checkpoints it writes on a stop) is deleted too (deleted_jobs.py)."""
    if deps.deleted_jobs is None or state.TrainingJobStatus not in ENDED:
        return
    owner = await deps.deleted_jobs.owner_of(state.TrainingJobName)  # remembered by training job name
    if owner is None:
        return
    removed = await delete_object_versions(deps.s3, deps.launch.bucket,
                                           f"training-jobs/{owner}/{job_id_of(state.TrainingJobName)}/")
    await deps.deleted_jobs.forget(state.TrainingJobName)
    log.info("a deleted account's ended training job cleared", extra={"job_id": state.TrainingJobName,
                                                                       "objects": removed})


def _billed(job: Job, state: TrainingJobStateChanged, deps: Deps) -> Bill:
    """What SageMaker billed for the job's current part."""
    seconds = _number(getattr(state, "BillableTimeInSeconds", None))
    if seconds is None:
        seconds = _number(state.TrainingTimeInSeconds)
    # SageMaker's BillableTimeInSeconds is per instance: the bill is that times InstanceCount (the cluster's price).
    return Bill(limits.billed_micros(state, deps.catalog.cluster(job.instance_type, job.instance_count)),
                int(seconds) if seconds is not None else None)


async def _read_last_metrics(job: Job, state: TrainingJobStateChanged, deps: Deps) -> None:
    """The steps logged since the reconciler's last poll, read before the job ends (it reads only active
    jobs): a short job's chart is complete even when it ran between two polls."""
    started_ms = _number(state.TrainingStartTime)
    try:
        await metrics_from_logs.poll(deps, job, started_ms / 1000 if started_ms is not None else None)
    except ClientError:  # the logs are a nicety here; the job's end is not
        log.warning("could not read the last metrics", extra={"job_id": job.job_id}, exc_info=True)


async def _record_secondary_status(deps: Deps, job: Job, state: TrainingJobStateChanged) -> None:
    """SageMaker's SecondaryStatus (Starting, Downloading, Training, Uploading...) on the job; a change is an event."""
    secondary = state.SecondaryStatus
    if not secondary or secondary == job.secondary_status:
        return
    modified = _number(state.LastModifiedTime)  # epoch ms in events (and in the reconciler's details)
    if await deps.jobs.set_secondary_status(job.job_id, secondary, int(modified) if modified is not None else None):
        job.secondary_status = secondary
        await record_event(deps, job, _secondary_message(state, secondary), data={"secondary_status": secondary})


def _secondary_message(state: TrainingJobStateChanged, secondary: str) -> str:
    for transition in reversed(state.SecondaryStatusTransitions):
        if transition.get("Status") == secondary and transition.get("StatusMessage"):
            return f"{secondary}: {transition['StatusMessage']}"
    return f"Training job status: {secondary}"


async def _apply(job: Job, state: TrainingJobStateChanged, deps: Deps) -> None:
    status = state.TrainingJobStatus
    if status == "InProgress":
        started = mark_started(job.parts, int(time.time()))
        if await deps.jobs.transition(job.job_id, "running", parts=started):
            await announce(deps, job, "running")
            part = job.parts[-1] if job.parts else None
            if part and part["kind"] != "start":
                where = f"from the checkpoint at step {part['from_step']}" if part.get("from_step") else \
                    "from the start (no checkpoint)"
                await record_event(deps, job, f"Fine-tuning job {part['kind']}d: part {part['part']} started "
                                   f"{where}", data={"part": part["part"], "from_step": part.get("from_step")})
            else:
                await record_event(deps, job, "Fine-tuning job started")
    elif status == "Completed":
        await _succeed(job, state, deps)
    elif status == "Failed":
        await fail_job(deps, job, "training_failed", state.FailureReason or "Training failed.",
                       bill=_billed(job, state, deps))
    elif status == "Stopped":
        bill = _billed(job, state, deps)
        if state.SecondaryStatus == "MaxRuntimeExceeded":
            await fail_job(deps, job, "max_runtime_exceeded", "The job reached its maximum run time and was stopped.",
                           bill=bill)
        elif job.status == "paused":
            return  # the Stopped that paused it, again (EventBridge delivers at least once): it stays paused
        elif job.status == "pausing" and job.cancel_requested_at is None:
            await _paused(job, deps, bill)
        elif await deps.jobs.transition(job.job_id, "cancelled", finished_at=int(time.time()),
                                        bill_micros=bill.micros, billed_seconds=bill.seconds):
            await announce(deps, job, "cancelled")
            await record_event(deps, job, "Fine-tuning job cancelled")


async def _paused(job: Job, deps: Deps, bill: Bill) -> None:
    """SageMaker stopped a pausing job's training job: paused, at its newest checkpoint."""
    found = await artifacts.checkpoint_steps(deps, job)
    step = found[0] if found else None
    if await deps.jobs.transition(job.job_id, "paused", paused_at=int(time.time()), bill_micros=bill.micros,
                                  billed_seconds=bill.seconds):
        await announce(deps, job, "paused", step=step)
        where = f"at the checkpoint of step {step}" if step is not None else "with no checkpoint written"
        await record_event(deps, job, f"Fine-tuning job paused {where}", data={"checkpoint_step": step})


async def _succeed(job: Job, state: TrainingJobStateChanged, deps: Deps) -> None:
    if job.status == "succeeded":
        await _finish_success(job, deps)
        return
    if job.status in TERMINAL:
        return
    artifact = (state.ModelArtifacts or {}).get("S3ModelArtifacts")
    tokens = _final_metric(state, "trained_tokens")
    name = job.fine_tuned_model_name()
    # Written before the job says succeeded, so the job never names a results file that does not exist.
    result_file = await results_file.write_results(deps.s3, deps.launch.bucket, job.user_id, job.job_id, artifact,
                                                   deps.launch.kms_key_id)
    bill = _billed(job, state, deps)
    if await deps.jobs.transition(job.job_id, "succeeded", finished_at=int(time.time()), fine_tuned_model=name,
                                  bill_micros=bill.micros, billed_seconds=bill.seconds,
                                  model_artifact=artifact, trained_tokens=int(tokens) if tokens is not None else None,
                                  result_files=[result_file.file_id]):
        # Announced first: a redelivery finds the job succeeded and does nothing, so a failure after the move (the
        # job's event records when DynamoDB throttles, say) must not lose what the results file and model wait on.
        await announce(deps, job, "succeeded", fine_tuned_model=name, model_artifact=artifact,
                       result_file=result_file, training_file=job.training_file,
                       validation_file=job.validation_file, created_at=int(time.time()))
        await record_event(deps, job, f"New fine-tuned model created: {name}")
        await record_event(deps, job, SUCCEEDED_MESSAGE)  # the last step: see _finish_success
        await _record_throughput(deps, job, state, tokens)


async def _finish_success(job: Job, deps: Deps) -> None:
    """A Completed again for a job that succeeded: EventBridge's duplicate, or the same message again because the
    first handling stopped between the move to succeeded and its end (its worker killed, AWS refusing a call), maybe
    before its announcement. The end's last step, the SUCCEEDED_MESSAGE event, tells which: without it the job is
    announced again (every consumer takes training.job.succeeded once) with its results file as the bucket has it."""
    recent, _ = await deps.jobs.list_events(job.job_id, limit=10, after=None, event_type="message")
    if any(event.get("message") == SUCCEEDED_MESSAGE for event in recent):
        return  # a repeated Completed: the first one got to the end
    result_file = await results_file.written_results(deps.s3, deps.launch.bucket, job.user_id, job.job_id)
    if result_file is None or job.fine_tuned_model is None:
        log.warning("a succeeded job's end cannot be told again: no results file", extra={"job_id": job.job_id})
        return
    await announce(deps, job, "succeeded", fine_tuned_model=job.fine_tuned_model, model_artifact=job.model_artifact,
                   result_file=result_file, training_file=job.training_file, validation_file=job.validation_file,
                   created_at=job.finished_at or int(time.time()))
    await record_event(deps, job, f"New fine-tuned model created: {job.fine_tuned_model}")
    await record_event(deps, job, SUCCEEDED_MESSAGE)
    log.info("a succeeded job's end told again", extra={"job_id": job.job_id})


async def _record_throughput(deps: Deps, job: Job, state: TrainingJobStateChanged, tokens: float | None) -> None:
    """A finished job's measured seconds per token feed the next estimates for its model and instance type."""
    seconds = _number(state.TrainingTimeInSeconds)
    # Only a whole supervised run in one part measures the speed estimates assume (DPO's extra passes are counted
    # on top of it; a resumed part's time covers only its own steps, the tokens all of them).
    if not seconds or not tokens or job.method != "supervised" or len(job.parts) > 1:
        return
    try:
        await deps.throughput.record(job.base, throughput_key(job.instance_type, job.instance_count), seconds,
                                     int(tokens))
    except ClientError as exc:  # an estimate input, never worth failing the job's completion over
        log.warning("throughput not recorded", extra={"job_id": job.job_id, "error": str(exc)})
