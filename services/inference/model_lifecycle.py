"""A fine-tuned model's life in inference: it arrives with `training.job.succeeded` (written once, then its
automatic base-vs-tuned evaluation when the job had a validation file), and leaves when its owner deletes it
(`DELETE /v1/models/{id}`: its deployments are taken down, and `inference.model.deleted` tells training to
remove the job's artifacts)."""

from __future__ import annotations

import logging
import time
from typing import Any

from services.inference.deployments import take_down
from services.inference.deps import Deps
from services.inference.evaluations import evaluate_new_model
from services.inference.models import FineTunedModel
from services.inference.served_models import resolve_model
from shared.contracts.inference_events import ModelDeleted
from shared.contracts.training_events import JobSucceeded
from shared.envelope import new_event
from shared.errors import InvalidRequest

log = logging.getLogger(__name__)


async def project_fine_tuned_model(event: JobSucceeded, deps: Deps) -> None:
    if not event.model_artifact:
        log.warning("succeeded job without an artifact", extra={"job_id": event.job_id})
        return
    model = FineTunedModel(model_id=event.fine_tuned_model, user_id=event.user_id, base_model=event.model,
                           job_id=event.job_id, artifact=event.model_artifact,
                           created_at=event.created_at or int(time.time()),
                           training_file=event.training_file, validation_file=event.validation_file)
    if await deps.models.put(model):
        log.info("fine-tuned model registered", extra={"model": model.model_id, "job_id": event.job_id})
    # Also on a redelivery: evaluate_new_model creates the evaluation once (its id follows the job).
    await evaluate_new_model(model, deps)


async def delete_model(model_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    resolved = await resolve_model(model_id, user_id, deps)
    if resolved.fine_tuned is None:
        raise InvalidRequest(f"{model_id} is a base model: only your fine-tuned models can be deleted.",
                             param="model", code="model_not_deletable")
    if await deps.models.mark_deleted(model_id):
        for deployment in await deps.deployments.for_user(user_id):
            if deployment.model == model_id and deployment.status in ("creating", "in_service"):
                await take_down(deployment, deps, "model deleted")
        await deps.events.publish(new_event(ModelDeleted(model=model_id, user_id=user_id,
                                                         job_id=resolved.fine_tuned.job_id), user_id=user_id))
        log.info("fine-tuned model deleted", extra={"model": model_id, "job_id": resolved.fine_tuned.job_id})
    return {"id": model_id, "object": "model", "deleted": True}
