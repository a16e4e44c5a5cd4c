"""A job's status is told to the rest of the platform (its `training.job.*` event) even when what follows the
status move fails: DynamoDB throttling the job's own event record after the move used to lose the announcement
for good, since the redelivered message finds the job already moved and does nothing (the results file was never
registered, the model never listed)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.contracts.training_events import JOB_FAILED, JOB_SUCCEEDED
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
    assert fakes.events.types().count(announced) == 1
