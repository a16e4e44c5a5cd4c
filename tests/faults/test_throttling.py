"""Throttling (ThrottlingException, ProvisionedThroughputExceededException, RequestThrottled) injected into the
DynamoDB, SQS and SageMaker calls of the workers and the reconciler (shared/faults.py), at a rate that gets past
botocore's retries often: every job still reaches its terminal state, none is launched twice, no file or artifact
is lost."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fault_cluster import FaultCluster, chat_file

THROTTLED = ("files-worker", "training-worker", "training-reconciler")
# Each attempt throttled at 25%, two attempts a call: about one call in sixteen fails in the code's hands.
FAULTS = {"LLMT_FAULTS": "dynamodb:0.25,sqs:0.25,sagemaker:0.25", "LLMT_FAULTS_SEED": "14", "AWS_MAX_ATTEMPTS": "1"}


@pytest.fixture
def throttled(faults: FaultCluster) -> Iterator[FaultCluster]:
    for name in THROTTLED:
        faults.restart(name, **FAULTS)
    yield faults
    for name in THROTTLED:
        faults.restart(name)


def _injected(faults: FaultCluster) -> int:
    logs = faults.cluster.data_dir / "logs"
    return sum((logs / f"{name}.log").read_text(errors="replace").count("injected throttling") for name in THROTTLED)


def test_jobs_settle_through_throttled_aws_calls(throttled: FaultCluster) -> None:
    faults, before = throttled, _injected(throttled)
    user = faults.user()
    files = [faults.upload(user, chat_file()) for _ in range(2)]
    for file_id in files:
        faults.wait_file(user, file_id, timeout_s=120)
    jobs = [faults.create_job(user, file_id) for file_id in (*files, files[0])]
    for job in jobs:
        faults.assert_settled(user, job, timeout_s=180)
    assert _injected(faults) - before > 0  # the faults were really there
