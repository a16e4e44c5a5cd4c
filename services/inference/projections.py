"""What inference learns from other services' events: the files evaluations read (files' events), and an
account's deletion (auth's `user.deleted`: its deployments come down, its models, evaluations and files go)."""

from __future__ import annotations

import logging

from services.inference.deployments import take_down
from services.inference.deps import Deps
from services.inference.models import FileView
from shared.contracts.auth_events import UserDeleted
from shared.contracts.files_events import FileEvent, ValidationResult, file_status

log = logging.getLogger(__name__)


async def project_file(event: FileEvent, deps: Deps) -> None:
    report = event if isinstance(event, ValidationResult) else None
    await deps.files.put(FileView(file_id=event.file_id, user_id=event.user_id, status=file_status(event),
                                  purpose=event.purpose, filename=event.filename,
                                  example_type=report.example_type if report else None,
                                  normalized_uri=report.normalized_uri if report else None,
                                  examples=report.examples if report else None))


async def delete_user_data(event: UserDeleted, deps: Deps) -> None:
    """Deployments go through their usual takedown (the reconciler finishes it); records go at once."""
    for deployment in await deps.deployments.for_user(event.user_id):
        if deployment.status in ("creating", "in_service"):
            await take_down(deployment, deps, "account deleted")
    for model in await deps.models.for_user(event.user_id):
        await deps.models.delete(model.model_id)
    for evaluation in await deps.evaluations.for_user(event.user_id):
        if evaluation.results_key:
            await deps.s3.delete_object(Bucket=deps.config.bucket, Key=evaluation.results_key)
        await deps.evaluations.delete(evaluation.evaluation_id)
    await deps.files.delete_of(event.user_id)
    log.info("user's inference data removed", extra={"user_id": event.user_id})
