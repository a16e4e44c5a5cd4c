"""Stopping a job's SageMaker training job (its name is the job id), as cancel, a launch that lost the race to a
cancel, and a user's deletion need it: a stop SageMaker refuses because it does not know the job, or the job is
already over, is an answer, not an error. (Creating one is the launch's, launch.py; describing one the
reconciler's.)"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from services.training.deps import SageMaker

log = logging.getLogger(__name__)


async def stop_training_job(sagemaker: SageMaker, job_id: str) -> bool:
    """StopTrainingJob; False when SageMaker has no such job or it is already over (ValidationException)."""
    try:
        await sagemaker.stop_training_job(TrainingJobName=job_id)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ValidationException":
            raise
        log.info("stop refused", extra={"job_id": job_id, "error": str(exc)})
        return False
    return True

