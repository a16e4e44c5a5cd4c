"""Pause, resume and retry: a job stopped with a checkpoint and carried on under the same id, as a new part.

- pause (`POST /v1/fine_tuning/jobs/{id}/pause`, a running job): StopTrainingJob; the trainer writes a checkpoint
  of its last whole step on the SIGTERM and SageMaker syncs it to the job's CheckpointConfig.S3Uri. The job is
  `pausing` until SageMaker says Stopped, then `paused` (its part's bill counted, its reservation released).
- resume (`.../resume`, a paused job): a new part (parts.py) queued and launched: a new SageMaker training job
  with the same request but its name, which downloads the checkpoints and resumes from the newest.
- retry (`POST /api/jobs/{id}/retry`, a failed or cancelled job): the same, from the newest checkpoint if there is
  one (else from the start, and it says so), with a fresh budget cap if one is given. A job that failed before
  reaching SageMaker (its files) is validated again instead.

Resume and retry reserve the part's ceiling like a new job (limits.py): the user's limits apply again.
"""

from __future__ import annotations

import time
from typing import Any

from services.training import artifacts, estimates, limits
from services.training.deps import Deps
from services.training.job_events import announce, record_event
from services.training.models import Job, JobStatus
from services.training.parts import PartKind, new_part
from services.training.sagemaker_stop import stop_training_job
from services.training.training_job_request import remaining_budget_usd
from shared.contracts.training_events import LaunchRequested
from shared.envelope import new_event
from shared.errors import InvalidRequest

PAUSE_REQUESTED = "Job pause requested: stopping with a checkpoint"
# What the last part's end left on the job, gone once a new part starts.
CLEARED_ON_NEW_PART = ("error", "finished_at", "cancel_requested_at", "pause_requested_at")


def _state_error(job: Job, action: str, needs: str) -> InvalidRequest:
    return InvalidRequest(f"Job {job.job_id} is {job.status}; only a {needs} job can be {action}.",
                          code="invalid_job_state")


async def pause_job(job: Job, deps: Deps) -> None:
    if job.status != "running" or job.cancel_requested_at is not None:
        raise _state_error(job, "paused", "running")
    if not await stop_training_job(deps.sagemaker, job.training_job_name()):
        # SageMaker's job is already over; its Completed/Failed event is on its way and decides the outcome.
        raise InvalidRequest(f"Job {job.job_id} has already finished training and cannot be paused.",
                             code="job_already_finished")
    if await deps.jobs.transition(job.job_id, "pausing", only_from="running", pause_requested_at=int(time.time())):
        await record_event(deps, job, PAUSE_REQUESTED)
        await announce(deps, job, "pausing")


async def resume_job(job: Job, deps: Deps, max_cost_usd: float | None = None) -> Job:
    if job.status != "paused":
        raise _state_error(job, "resumed", "paused")
    steps = await artifacts.checkpoint_steps(deps, job)
    await _new_part(job, deps, "resume", steps[0] if steps else None, max_cost_usd)
    return job


async def retry_job(job: Job, deps: Deps, max_cost_usd: float | None = None) -> dict[str, Any]:
    """The job queued again, and what the retry starts from."""
    if job.status not in ("failed", "cancelled"):
        raise _state_error(job, "retried", "failed or cancelled")
    if not job.sagemaker_job_name:  # never reached SageMaker (its files, its launch): validated again
        await _new_part(job, deps, "retry", None, max_cost_usd, to="validating_files")
        message = "The job never started training: its files are validated again and it starts from the beginning"
        return {"from_step": None, "checkpoint": None, "message": message}
    steps = await artifacts.checkpoint_steps(deps, job)
    step = steps[0] if steps else None
    await _new_part(job, deps, "retry", step, max_cost_usd)
    if step is None:
        return {"from_step": None, "checkpoint": None, "message": "No checkpoint: starting over from the beginning"}
    return {"from_step": step, "checkpoint": artifacts.checkpoint_id(job.job_id, step),
            "message": f"Resuming from the checkpoint at step {step}"}


async def _new_part(job: Job, deps: Deps, kind: PartKind, from_step: int | None, max_cost_usd: float | None,
                    to: JobStatus = "queued") -> None:
    """The job back to `to` with its next part and a new reservation, then its launch command."""
    writes: dict[str, Any] = {"relaunch_requested_at": int(time.time())}
    if max_cost_usd is not None:  # a fresh budget, from what the job was billed so far
        writes.update(max_cost_usd=max_cost_usd, budget_set_at_micros=job.billed_micros or 0)
    budget = remaining_budget_usd(job.model_copy(update=writes))
    if budget is not None and budget <= 0:
        raise InvalidRequest(f"Job {job.job_id}'s budget of ${job.max_cost_usd:.2f} is spent; give a new "
                             "max_cost_usd to go on.", param="max_cost_usd", code="budget_spent")
    instance = deps.catalog.cluster(job.instance_type, job.instance_count)
    if instance is not None:
        stop = estimates.budget_stopping_condition(budget, instance, job.spot, deps.launch.max_runtime_s)
        if deps.usage is not None:
            writes["reserved_micros"] = limits.reserved_micros(instance, stop)
    parts = job.parts or []
    if not parts and to == "queued":  # a job from before parts: its first training job was named as the job
        parts = [{"part": 1, "sagemaker_job_name": job.job_id, "kind": "start", "from_step": None}]
    writes["parts"] = new_part(parts, job.job_id, kind, from_step if to == "queued" else None)
    if not await deps.jobs.reactivate(job, to, deps.usage, deps.limits, **writes):
        raise InvalidRequest(f"Job {job.job_id} changed meanwhile; read it again.", code="invalid_job_state")
    await deps.jobs.clear_fields(job.job_id, *CLEARED_ON_NEW_PART)
    job.parts = writes["parts"]
    part = job.parts[-1]
    where = f"from the checkpoint at step {from_step}" if from_step else "from the beginning"
    await record_event(deps, job, f"Fine-tuning job {kind} requested: part {part['part']} will start {where}",
                       data={"part": part["part"], "from_step": from_step, "kind": kind})
    await deps.commands.send(new_event(LaunchRequested(job_id=job.job_id), user_id=job.user_id))
    await announce(deps, job, to)
