"""A job's status moves, written once: which status may follow which. Every `jobs.transition(...)` takes its
condition from here (store.JobsStore writes `status IN (the allowed sources)`), so no call site lists states.

    validating_files -> queued (files validated) | failed | cancelled
    queued           -> running (SageMaker InProgress) | succeeded (a Completed seen first) | failed | cancelled
    running          -> succeeded | failed | cancelled (SageMaker Stopped) | pausing (pause asked)
    pausing          -> paused (SageMaker Stopped, a checkpoint written) | succeeded | failed | cancelled
    paused           -> queued (resume: a new part) | cancelled
    failed, cancelled -> queued (retry: a new part, from the newest checkpoint) | validating_files (retry of a job
                         that never reached SageMaker)
    succeeded: final.
"""

from __future__ import annotations

from typing import get_args

from services.training.models import JobStatus

STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "succeeded", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "pausing"}),
    "pausing": frozenset({"paused", "succeeded", "failed", "cancelled"}),
    "paused": frozenset({"queued", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset({"queued", "validating_files"}),
    "cancelled": frozenset({"queued", "validating_files"}),
}


def allowed(source: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED[source]


def sources(target: JobStatus) -> tuple[JobStatus, ...]:
    """The statuses a job may move to `target` from, in the table's order."""
    return tuple(source for source in STATUSES if allowed(source, target))


def expected(target: JobStatus, only_from: JobStatus | None = None) -> tuple[JobStatus, ...]:
    """What the conditional write to `target` must find: any allowed source, or only `only_from` when the caller
    moves the job from the status it has just read (none at all when that move is not in the table)."""
    if only_from is None:
        return sources(target)
    return (only_from,) if allowed(only_from, target) else ()
