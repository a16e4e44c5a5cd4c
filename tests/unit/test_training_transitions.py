"""A job's status moves, written once (services/training/transitions.py): every move the table does not list is
refused, by the DynamoDB store's conditional write and by the unit tests' fake alike, and every listed one is
accepted."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from services.training import transitions
from services.training.models import TERMINAL, Job, JobStatus
from services.training.store import JobsStore
from tests.support.training import FakeJobsStore, run

PAIRS = list(itertools.product(transitions.STATUSES, repeat=2))


class ConditionalCheckFailedException(Exception):
    pass


class OneJobTable:
    """DynamoDB's update_item for one job item: applies `SET #s = :to` only when the item's status is among the
    condition's `:e*` values, as DynamoDB evaluates `#s IN (:e0, :e1, ...)`."""

    class exceptions:  # as botocore spells a client's exception classes
        ConditionalCheckFailedException = ConditionalCheckFailedException

    def __init__(self, status: str) -> None:
        self.status = status
        self.conditions: list[str] = []

    async def get_item(self, **request: Any) -> dict[str, Any]:
        return {}  # a final move reads the job for its spend reservation: this one has none

    async def update_item(self, **request: Any) -> dict[str, Any]:
        values = request["ExpressionAttributeValues"]
        allowed = {values[name]["S"] for name in values if name.startswith(":e")}
        self.conditions.append(request["ConditionExpression"])
        if self.status not in allowed:
            raise ConditionalCheckFailedException
        self.status = values[":to"]["S"]
        return {}


def _job(status: JobStatus) -> Job:
    return Job(job_id="ftjob-1", user_id="u1", created_at="t", created_at_unix=1, model="m", training_file="f",
               hyperparameters={}, seed=1, instance_type="ml.m5.large", status=status)


def test_the_table_names_every_status_and_only_success_is_final() -> None:
    assert set(transitions.ALLOWED) == set(transitions.STATUSES)
    assert {s for s, targets in transitions.ALLOWED.items() if not targets} == {"succeeded"}
    # A job that is over leaves that only when its owner retries it (pausing.py): back to a launch, never running.
    for over in ("failed", "cancelled"):
        assert transitions.ALLOWED[over] == {"queued", "validating_files"} and over in TERMINAL
    assert all(not transitions.allowed(s, s) for s in transitions.STATUSES)  # a move is a change


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_the_store_moves_a_job_only_as_the_table_allows(source: JobStatus, target: JobStatus) -> None:
    table = OneJobTable(source)
    store = JobsStore(table, "jobs", "events", "files")
    moved = run(store.transition("ftjob-1", target))
    assert moved == transitions.allowed(source, target)
    assert table.status == (target if moved else source)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_the_fake_store_moves_a_job_only_as_the_table_allows(source: JobStatus, target: JobStatus) -> None:
    fake = FakeJobsStore()
    run(fake.create(_job(source)))
    assert run(fake.transition("ftjob-1", target)) == transitions.allowed(source, target)


@pytest.mark.parametrize(("source", "target"), PAIRS)
def test_a_move_from_the_status_just_read_is_refused_when_the_job_has_moved_on(source: JobStatus,
                                                                              target: JobStatus) -> None:
    """`only_from`: cancel moves the job from the status it read, so a job that started running meanwhile is
    cancelled by SageMaker's Stopped event instead, never by the API."""
    for current in transitions.STATUSES:
        table = OneJobTable(current)
        moved = run(JobsStore(table, "jobs", "events", "files").transition("ftjob-1", target, only_from=source))
        assert moved == (current == source and transitions.allowed(source, target)), (current, source, target)
