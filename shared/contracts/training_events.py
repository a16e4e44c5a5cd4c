"""Events the training service publishes, to its topic `llm-tuner-training-events`, and its one command.

Status events (one per status a job enters; JOB_STATUS_EVENTS maps each status to its model):
`training.job.created`, `.queued`, `.running`, `.pausing`, `.paused`, `.succeeded`, `.failed`, `.cancelled`, each
{job_id, user_id, status, model (the base model), ...}. `training.job.succeeded` adds the fine-tuned model's name,
the artifact and `result_file`: the results CSV, already written to `files/{user_id}/{file_id}`, which files
registers as a fine-tune-results file.
`training.job.metrics`: one per trainer step read from the job's log stream (live charts).
Consumers: files and inference (`training.job.succeeded`), every gateway replica (all of them: live updates).

Command (to training's own work queue, never published): `training.job.launch_requested` {job_id}.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.contracts.event import Event

JOB_CREATED = "training.job.created"
JOB_QUEUED = "training.job.queued"
JOB_RUNNING = "training.job.running"
JOB_SUCCEEDED = "training.job.succeeded"
JOB_FAILED = "training.job.failed"
JOB_CANCELLED = "training.job.cancelled"
JOB_PAUSING = "training.job.pausing"
JOB_PAUSED = "training.job.paused"
JOB_METRICS = "training.job.metrics"
LAUNCH_REQUESTED = "training.job.launch_requested"


class JobStatusEvent(Event):
    job_id: str
    user_id: str
    model: str
    status: str


class JobCreated(JobStatusEvent):
    """The job's record is written (its status is then `validating_files`); the event's status says "created"."""

    TYPE = JOB_CREATED
    status: Literal["created"] = "created"


class JobQueued(JobStatusEvent):
    TYPE = JOB_QUEUED
    status: Literal["queued"] = "queued"


class JobRunning(JobStatusEvent):
    TYPE = JOB_RUNNING
    status: Literal["running"] = "running"


class ResultFile(BaseModel):
    model_config = ConfigDict(frozen=True)
    file_id: str
    s3_key: str
    bytes: int
    filename: str


class JobSucceeded(JobStatusEvent):
    TYPE = JOB_SUCCEEDED
    status: Literal["succeeded"] = "succeeded"
    fine_tuned_model: str
    model_artifact: str | None = None
    result_file: ResultFile
    # What inference needs for a fine-tuned model's automatic base-vs-tuned evaluation (its held-out set).
    training_file: str | None = None
    validation_file: str | None = None
    created_at: int | None = None


class JobError(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str
    message: str
    param: str | None = None


class JobFailed(JobStatusEvent):
    TYPE = JOB_FAILED
    status: Literal["failed"] = "failed"
    error: JobError


class JobCancelled(JobStatusEvent):
    TYPE = JOB_CANCELLED
    status: Literal["cancelled"] = "cancelled"


class JobPausing(JobStatusEvent):
    """A pause was asked for: SageMaker is stopping the job, which writes a checkpoint first."""

    TYPE = JOB_PAUSING
    status: Literal["pausing"] = "pausing"


class JobPaused(JobStatusEvent):
    """The job's training job has stopped with its checkpoint: it can be resumed (a new part from there)."""

    TYPE = JOB_PAUSED
    status: Literal["paused"] = "paused"
    step: int | None = None  # the checkpoint's


# The event a job announces when it enters each status.
JOB_STATUS_EVENTS: dict[str, type[JobStatusEvent]] = {
    "validating_files": JobCreated, "queued": JobQueued, "running": JobRunning, "succeeded": JobSucceeded,
    "failed": JobFailed, "cancelled": JobCancelled, "pausing": JobPausing, "paused": JobPaused,
}


class JobMetrics(Event):
    """OpenAI's metrics event data (step, train_loss, valid_loss, total_steps...) and whatever else the trainer
    logged for that step: unknown fields are kept, so the live chart gets what the trainer printed."""

    TYPE = JOB_METRICS
    model_config = ConfigDict(extra="allow", frozen=True)
    job_id: str
    user_id: str
    model: str
    step: int
    total_steps: int | None = None
    estimated_finish: int | None = None


class LaunchRequested(Event):
    TYPE = LAUNCH_REQUESTED
    job_id: str
