"""inference's `inference.model.deleted`: its owner deleted a fine-tuned model, so the job's artifacts go (the
adapter, checkpoints, merged model: everything under `training-jobs/{user}/{job}/`). The job itself stays, as
OpenAI keeps a job whose model was deleted; its record says when the model went."""

from __future__ import annotations

import logging
import time

from services.training.deps import Deps
from services.training.job_events import record_event
from shared.contracts.inference_events import ModelDeleted
from shared.s3 import delete_object_versions

log = logging.getLogger(__name__)


async def delete_model_artifacts(event: ModelDeleted, deps: Deps) -> None:
    job = await deps.jobs.get(event.job_id)
    if job is None or job.user_id != event.user_id or job.fine_tuned_model != event.model:
        log.info("model deletion for no job of ours", extra={"job_id": event.job_id, "model": event.model})
        return
    removed = await delete_object_versions(deps.s3, deps.launch.bucket,
                                           f"training-jobs/{job.user_id}/{job.job_id}/")
    if job.model_deleted_at is None:
        await deps.jobs.set_fields(job.job_id, model_deleted_at=int(time.time()))
        await record_event(deps, job, f"The fine-tuned model {event.model} was deleted, with its artifacts")
    log.info("fine-tuned model's artifacts removed", extra={"job_id": job.job_id, "objects": removed})
