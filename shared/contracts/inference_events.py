"""Events the inference service publishes, to its topic `llm-tuner-inference-events`, and its commands.

Deployment events (one per status a deployment enters; DEPLOYMENT_STATUS_EVENTS maps each status to its model):
`inference.deployment.creating`, `.in_service`, `.failed`, `.deleting`, `.deleted`, each {deployment_id,
user_id, model, status, instance_type, ...}. `inference.model.deleted` {model, user_id, job_id}: a fine-tuned
model its owner deleted; training removes the job's artifacts. `inference.evaluation.*` {evaluation_id, user_id,
status, ...}: an evaluation's progress.
Consumers: training (`inference.model.deleted`), every gateway replica (deployment and evaluation events: live
updates for the owner's browsers).

Commands (to inference's own work queue, never published): `inference.deployment.changed` {deployment_id}
(advance a deployment: create or take down what it needs in SageMaker) and `inference.evaluation.requested`
{evaluation_id}.
"""

from __future__ import annotations

from typing import Literal

from shared.contracts.event import Event

DEPLOYMENT_CREATING = "inference.deployment.creating"
DEPLOYMENT_IN_SERVICE = "inference.deployment.in_service"
DEPLOYMENT_FAILED = "inference.deployment.failed"
DEPLOYMENT_DELETING = "inference.deployment.deleting"
DEPLOYMENT_DELETED = "inference.deployment.deleted"
MODEL_DELETED = "inference.model.deleted"
EVALUATION_CREATED = "inference.evaluation.created"
EVALUATION_RUNNING = "inference.evaluation.running"
EVALUATION_SUCCEEDED = "inference.evaluation.succeeded"
EVALUATION_FAILED = "inference.evaluation.failed"
DEPLOYMENT_CHANGED = "inference.deployment.changed"
EVALUATION_REQUESTED = "inference.evaluation.requested"


class DeploymentEvent(Event):
    deployment_id: str
    user_id: str
    model: str
    status: str
    instance_type: str
    reason: str | None = None  # failed: why; deleting: "idle", "deleted by its owner", "model deleted", ...


class DeploymentCreating(DeploymentEvent):
    TYPE = DEPLOYMENT_CREATING
    status: Literal["creating"] = "creating"


class DeploymentInService(DeploymentEvent):
    TYPE = DEPLOYMENT_IN_SERVICE
    status: Literal["in_service"] = "in_service"


class DeploymentFailed(DeploymentEvent):
    TYPE = DEPLOYMENT_FAILED
    status: Literal["failed"] = "failed"


class DeploymentDeleting(DeploymentEvent):
    TYPE = DEPLOYMENT_DELETING
    status: Literal["deleting"] = "deleting"


class DeploymentDeleted(DeploymentEvent):
    TYPE = DEPLOYMENT_DELETED
    status: Literal["deleted"] = "deleted"


DEPLOYMENT_STATUS_EVENTS: dict[str, type[DeploymentEvent]] = {
    "creating": DeploymentCreating, "in_service": DeploymentInService, "failed": DeploymentFailed,
    "deleting": DeploymentDeleting, "deleted": DeploymentDeleted,
}


class ModelDeleted(Event):
    """A fine-tuned model is gone from serving; `job_id` is the job that trained it (its artifacts go too)."""

    TYPE = MODEL_DELETED
    model: str
    user_id: str
    job_id: str


class EvaluationEvent(Event):
    evaluation_id: str
    user_id: str
    status: str
    models: list[str]
    job_id: str | None = None
    error: str | None = None


class EvaluationCreated(EvaluationEvent):
    TYPE = EVALUATION_CREATED
    status: Literal["queued"] = "queued"


class EvaluationRunning(EvaluationEvent):
    TYPE = EVALUATION_RUNNING
    status: Literal["running"] = "running"


class EvaluationSucceeded(EvaluationEvent):
    TYPE = EVALUATION_SUCCEEDED
    status: Literal["succeeded"] = "succeeded"


class EvaluationFailed(EvaluationEvent):
    TYPE = EVALUATION_FAILED
    status: Literal["failed"] = "failed"


EVALUATION_STATUS_EVENTS: dict[str, type[EvaluationEvent]] = {
    "queued": EvaluationCreated, "running": EvaluationRunning, "succeeded": EvaluationSucceeded,
    "failed": EvaluationFailed,
}


class DeploymentChanged(Event):
    TYPE = DEPLOYMENT_CHANGED
    deployment_id: str


class EvaluationRequested(Event):
    TYPE = EVALUATION_REQUESTED
    evaluation_id: str
