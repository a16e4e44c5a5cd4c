"""A job's parts: the SageMaker training jobs it has run, one after another under the same fine-tuning job id.

The first part is named as the job (`ftjob-...`); each resume (after a pause) or retry (after a failure or a
cancel) adds one named `{job id}-{n}` (SageMaker's names are unique per account and region, and never reused).
Every part shares the job's CheckpointConfig.S3Uri, so a new part starts with the checkpoints the earlier ones
synced there, and the trainer resumes from the newest one of the same run (its fingerprint: the same data,
hyperparameters and start): nothing trains again but the steps after that checkpoint.

A part, as the job keeps it: {"part", "sagemaker_job_name", "kind" (start, resume, retry), "from_step" (the
checkpoint's step it resumes from; None: from the start), "created_at"}, and once it ended (store.transition, the
move to a status at rest): "outcome" (paused, succeeded, failed, cancelled), "ended_at", "billed_seconds",
"billed_micros".
"""

from __future__ import annotations

import time
from typing import Any, Literal, NamedTuple

PartKind = Literal["start", "resume", "retry"]


class Bill(NamedTuple):
    """What SageMaker billed for a part: store.transition's `bill_micros` and `billed_seconds`."""

    micros: int | None = None
    seconds: int | None = None


def part_name(job_id: str, number: int) -> str:
    return job_id if number == 1 else f"{job_id}-{number}"


def job_id_of(training_job_name: str) -> str:
    """The fine-tuning job a SageMaker training job belongs to: `ftjob-x` for `ftjob-x` and `ftjob-x-3`."""
    head, _, tail = training_job_name.rpartition("-")
    return head if head.startswith("ftjob-") and tail.isdigit() else training_job_name


def new_part(parts: list[dict[str, Any]], job_id: str, kind: PartKind, from_step: int | None) -> list[dict[str, Any]]:
    """`parts` with the next part added (a job from before parts existed had one: its first, named as the job)."""
    number = (parts[-1]["part"] if parts else 1) + 1 if kind != "start" else 1
    return [*parts, {"part": number, "sagemaker_job_name": part_name(job_id, number), "kind": kind,
                     "from_step": from_step, "created_at": int(time.time())}]


def ended_parts(parts: list[dict[str, Any]], outcome: str, bill_micros: int | None,
                billed_seconds: int | None) -> list[dict[str, Any]]:
    """`parts` with the current (last) one ended."""
    last = {**parts[-1], "outcome": outcome, "ended_at": int(time.time())}
    if bill_micros is not None:
        last["billed_micros"] = int(bill_micros)
    if billed_seconds is not None:
        last["billed_seconds"] = int(billed_seconds)
    return [*parts[:-1], last]


def mark_started(parts: list[dict[str, Any]], started_at: int) -> list[dict[str, Any]] | None:
    """`parts` with the current one's start time set (None when it is already set)."""
    if not parts or parts[-1].get("started_at"):
        return None
    return [*parts[:-1], {**parts[-1], "started_at": started_at}]
