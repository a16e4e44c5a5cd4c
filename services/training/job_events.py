"""A job's story, told two ways: its events (what `GET /v1/fine_tuning/jobs/{id}/events` lists, written to the
job events table) and its status events on training's topic (shared/contracts/training_events.py: one model per
status, JOB_STATUS_EVENTS). Also the one way a job fails: the conditional move to `failed`, then both."""

from __future__ import annotations

import secrets
import time
from typing import Any

from services.training.deps import Deps
from services.training.models import Job, JobStatus
from services.training.parts import Bill
from shared.contracts.training_events import JOB_STATUS_EVENTS
from shared.envelope import new_event


def event_id() -> str:
    # Sortable by time, so a job's events list newest first with one query.
    return f"ftevent-{time.time_ns() // 1000:016d}{secrets.token_hex(3)}"


async def record_event(deps: Deps, job: Job, message: str, level: str = "info",
                       data: dict[str, Any] | None = None, type_: str = "message") -> None:
    await deps.jobs.add_event(job.job_id, {"id": event_id(), "created_at": int(time.time()), "level": level,
                                           "message": message, "type": type_, "data": data})


async def announce(deps: Deps, job: Job, status: JobStatus, **extra: Any) -> None:
    """Publish the job's `training.job.{status}` event; `extra` are that status's own fields (its model's)."""
    # `model` is the catalog model (the base the adapter sits on): what inference serves it on.
    event = JOB_STATUS_EVENTS[status](job_id=job.job_id, user_id=job.user_id, model=job.base, **extra)
    await deps.events.publish(new_event(event, user_id=job.user_id))


async def fail_job(deps: Deps, job: Job, code: str, message: str, param: str | None = None,
                   bill: Bill | None = None) -> None:
    """Fail the job with OpenAI's error object, unless it is already over (then nothing is told);
    `bill`: what SageMaker billed for its current part, where it ran (store.transition's bill_micros and
    billed_seconds)."""
    error = {"code": code, "message": message, "param": param}
    bill = bill or Bill()
    if await deps.jobs.transition(job.job_id, "failed", error=error, finished_at=int(time.time()),
                                  bill_micros=bill.micros, billed_seconds=bill.seconds):
        # Announced first: a repeat finds the job failed and tells nothing again, whatever failed after the move.
        await announce(deps, job, "failed", error=error)
        await record_event(deps, job, message, level="error", data={"error_code": code, "error_param": param})
