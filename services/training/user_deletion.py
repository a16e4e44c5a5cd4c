"""auth's `user.deleted`: the account's jobs go with it, with their events, the projection of the user's files, its
usage counters and everything under `training-jobs/{user}/` in the bucket (adapters, checkpoints, merged models).

Launches and training jobs in flight are not left behind:
- each job that may have a training job (not over yet, or cancelled while SageMaker held it) is noted first
  (deleted_jobs.py), then its record is deleted, then its training job is stopped. A launch in flight reads its job
  after its CreateTrainingJob landed (launch.py): if that read comes after the deletion it finds no job and stops
  its own training job; if before, the training job already existed when this stop was sent.
- SageMaker uploads the model and checkpoints after a stop: when the training job's end is heard, its prefix is
  deleted again (sagemaker_state.py).
- The stops owed are kept until each was answered, so a retried deletion still sends them.
"""

from __future__ import annotations

import logging

from services.training.deps import Deps
from services.training.models import AT_REST, Job
from services.training.sagemaker_stop import stop_training_job
from shared.contracts.auth_events import UserDeleted
from shared.s3 import delete_object_versions

log = logging.getLogger(__name__)


def _may_have_training_job(job: Job) -> bool:
    return job.status not in AT_REST or (job.status == "cancelled" and job.sagemaker_job_name is not None)


async def delete_user_data(event: UserDeleted, deps: Deps) -> None:
    jobs = await deps.jobs.all_for_user(event.user_id)
    writers = [job.training_job_name() for job in jobs if _may_have_training_job(job)]  # the current parts'
    if deps.deleted_jobs is not None:
        await deps.deleted_jobs.remember(event.user_id, writers)
        writers = await deps.deleted_jobs.stops_owed(event.user_id)  # a retry's owed stops too
    for job in jobs:
        await deps.jobs.delete_job(job.job_id)  # before the stops: see the module's docstring
    for job_id in writers:
        await stop_training_job(deps.sagemaker, job_id)  # not launched, or over: an answer too
    if deps.deleted_jobs is not None:
        await deps.deleted_jobs.stops_done(event.user_id)
    if deps.usage is not None:
        await deps.usage.forget(event.user_id)
    await deps.jobs.delete_files_of(event.user_id)
    await delete_object_versions(deps.s3, deps.launch.bucket, f"training-jobs/{event.user_id}/")
    log.info("user's training data removed", extra={"user_id": event.user_id, "stopped": len(writers)})
