"""`POST /v1/fine_tuning/jobs/{id}/cancel`.

- validating_files / queued: `cancelled` at once, by a conditional write; a training job SageMaker may already
  have (the launch can be in flight) is stopped, "not found" ignored, and a launch that lands after the write
  stops its own training job (handlers._create_training_job).
- running: StopTrainingJob, `cancel_requested_at` set; the job stays `running` until SageMaker's Stopped event
  moves it to `cancelled` (handlers._apply_sagemaker_state), so every read of the job (retrieve, list, this
  answer) tells the same, true state and `finished_at` is set when it is really over.
- succeeded / failed / cancelled: 400 `job_already_finished`.
Either way `training.job.cancelled` is published once: by the one writer whose conditional move to
`cancelled` succeeds.
"""

from __future__ import annotations

import time

from services.training.handlers import Deps, _announce, get_job, record_event, stop_quietly
from services.training.models import TERMINAL, Job
from shared.errors import InvalidRequest

CANCEL_REQUESTED = "Job cancellation requested"
CANCELLED = "Fine-tuning job cancelled"


def _finished(job: Job) -> InvalidRequest:
    return InvalidRequest(f"Job {job.job_id} has already finished ({job.status}) and cannot be cancelled.",
                          code="job_already_finished")


async def cancel_job(job_id: str, user_id: str, deps: Deps) -> Job:
    for _ in range(3):  # a state that moved under us is read again
        job = await get_job(job_id, user_id, deps)
        if job.status in TERMINAL:
            raise _finished(job)
        if job.status == "running":
            return await _cancel_running(job, deps)
        now = int(time.time())
        if await deps.jobs.transition(job.job_id, "cancelled", (job.status,), finished_at=now):
            await record_event(deps, job, CANCEL_REQUESTED)
            if job.status == "queued" or job.sagemaker_job_name:
                await stop_quietly(deps, job.job_id)  # SageMaker may have it already
            await record_event(deps, job, CANCELLED)
            await _announce(deps, job, "cancelled")
            return await get_job(job_id, user_id, deps)
    return await get_job(job_id, user_id, deps)


async def _cancel_running(job: Job, deps: Deps) -> Job:
    if job.cancel_requested_at is not None:
        return job  # asked before: the Stopped event finishes it
    if not await stop_quietly(deps, job.job_id):
        # SageMaker's job is already over; its Completed/Failed event is on its way and decides the outcome.
        raise InvalidRequest(f"Job {job.job_id} has already finished training and cannot be cancelled.",
                             code="job_already_finished")
    await deps.jobs.set_fields(job.job_id, cancel_requested_at=int(time.time()))
    await record_event(deps, job, CANCEL_REQUESTED)
    return await get_job(job.job_id, job.user_id, deps)
