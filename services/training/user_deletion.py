"""auth's `user.deleted`: the account's jobs go with it. Queued and running ones are stopped on SageMaker; the
jobs, their events, the projection of the user's files and everything under `training-jobs/{user}/` in the
bucket (adapters, checkpoints, merged models) are removed."""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from services.training.deps import Deps
from shared.contracts.auth_events import UserDeleted
from shared.s3 import delete_object_versions

log = logging.getLogger(__name__)


async def delete_user_data(event: UserDeleted, deps: Deps) -> None:
    for job in await deps.jobs.all_for_user(event.user_id):
        if job.status in ("queued", "running"):
            try:
                await deps.sagemaker.stop_training_job(TrainingJobName=job.job_id)
            except ClientError as exc:  # not launched yet, or already over: nothing to stop
                log.info("stop on user deletion refused", extra={"job_id": job.job_id, "error": str(exc)})
        await deps.jobs.delete_job(job.job_id)
    await deps.jobs.delete_files_of(event.user_id)
    await delete_object_versions(deps.s3, deps.launch.bucket, f"training-jobs/{event.user_id}/")
    log.info("user's training data removed", extra={"user_id": event.user_id})
