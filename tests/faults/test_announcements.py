"""A job's status is told to the rest of the platform (its `training.job.*` event) even when its handling stops
after the status move: DynamoDB throttling the job's own event record after the move, or the worker dying before
it published, used to lose the announcement for good, since the redelivered message finds the job already moved
and does nothing (the results file was never registered, the model never listed)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.contracts.training_events import JOB_FAILED, JOB_SUCCEEDED
from shared.envelope import Envelope, MemoryPublisher
from tests.support.training import FakeJobsStore, Fakes, create, launch_job, put_file, sagemaker_state


class ThrottledEventRecords(FakeJobsStore):
    """The jobs store, its job-event writes throttled while `throttling` is on (after botocore's retries)."""

    throttling = False

    async def add_event(self, job_id: str, event: dict[str, Any]) -> None:
        if self.throttling:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                              "PutItem")
        await super().add_event(job_id, event)


@pytest.mark.parametrize(("status", "announced"), [("Completed", JOB_SUCCEEDED), ("Failed", JOB_FAILED)])
def test_the_end_of_a_job_is_announced_though_its_event_record_is_throttled(status: str, announced: str) -> None:
    store = ThrottledEventRecords()
    fakes = Fakes(jobs=store)
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "InProgress")
    store.throttling = True
    detail = {"ModelArtifacts": {"S3ModelArtifacts": "s3://b/out/model.tar.gz"}}
    with pytest.raises(ClientError):  # the handler fails: its message will come back
        sagemaker_state(fakes, job, status, **detail)
    store.throttling = False
    sagemaker_state(fakes, job, status, **detail)  # ... and does
    # (at least once: whether the first announcement left cannot be known; every consumer takes it once)
    assert fakes.events.types().count(announced) >= 1


class DiesBeforePublishing(MemoryPublisher):
    """The worker dies as it publishes training.job.succeeded the first time (the message will come back)."""

    died = False

    async def publish(self, envelope: Envelope) -> None:
        if envelope.type == JOB_SUCCEEDED and not self.died:
            self.died = True
            raise ConnectionError("the worker died here")
        await super().publish(envelope)


def test_success_is_announced_when_the_worker_died_after_the_move_and_only_once() -> None:
    fakes = Fakes(events=DiesBeforePublishing())
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "InProgress")
    detail = {"ModelArtifacts": {"S3ModelArtifacts": "s3://b/out/model.tar.gz"}}
    with pytest.raises(ConnectionError):
        sagemaker_state(fakes, job, "Completed", **detail)
    assert fakes.job(job.job_id).status == "succeeded" and JOB_SUCCEEDED not in fakes.events.types()
    sagemaker_state(fakes, job, "Completed", **detail)  # the same message again
    sagemaker_state(fakes, job, "Completed", **detail)  # and a duplicate after the end: nothing more
    assert fakes.events.types().count(JOB_SUCCEEDED) == 1
    [announced] = [e for e in fakes.events.published if e.type == JOB_SUCCEEDED]
    assert announced.data["result_file"]["file_id"] == fakes.job(job.job_id).result_files[0]
    assert fakes.messages(job).count("The job has successfully completed") == 1
