"""An account deleted while its job's launch is in flight, against the embedded AWS and the SageMaker emulator: the
training job that lands after the deletion is stopped (no orphan keeps running and billing), and what SageMaker
writes under the job's prefix after the deletion is deleted when the training job's end is heard.

The race is held at a known point, not hoped for: the launch's CreateTrainingJob call first runs the whole
`user.deleted` handler, then reaches the emulator."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import boto3
import pytest

from services.training import commands
from services.training.bootstrap import build_deps
from services.training.deps import Deps, SageMaker
from services.training.file_projection import project_file
from services.training.launch import launch_job
from services.training.models import CreateJob
from services.training.settings import Settings
from services.training.user_deletion import delete_user_data
from shared.aws import AwsClients
from shared.contracts import resources
from shared.contracts.auth_events import UserDeleted
from shared.contracts.training_events import LaunchRequested
from tests.support.fake_emulator import emulator_with_fake_trainer
from tests.support.polling import poll
from tests.support.training_cluster import upload_file, validated
from tests.support.workers import drain

FAKE_TRAINER = r'''
import time
time.sleep(120)  # a long run: it is stopped long before
'''


@pytest.fixture(scope="module")
def emulator(aws: Any, provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = {"SAGEMAKER_EMULATOR_STOP_GRACE_SECONDS": "1"}
    with emulator_with_fake_trainer(tmp_path_factory.mktemp("emulator"), FAKE_TRAINER, **settings) as url:
        yield url


class CreateAfter:
    """The SageMaker client, with `before_create` run inside CreateTrainingJob before the request is sent."""

    def __init__(self, real: SageMaker, before_create: Callable[[], Awaitable[None]]) -> None:
        self._real = real
        self._before_create = before_create

    async def create_training_job(self, **request: Any) -> Any:
        await self._before_create()
        return await self._real.create_training_job(**request)

    async def stop_training_job(self, *, TrainingJobName: str) -> Any:
        return await self._real.stop_training_job(TrainingJobName=TrainingJobName)

    async def describe_training_job(self, *, TrainingJobName: str) -> Any:
        return await self._real.describe_training_job(TrainingJobName=TrainingJobName)


def _item(job_id_key: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = boto3.client("dynamodb").get_item(
        TableName=resources.JOBS_TABLE, Key={"job_id": {"S": job_id_key}}, ConsistentRead=True).get("Item")
    return item


def _objects(prefix: str) -> list[str]:
    listed = boto3.client("s3").list_object_versions(Bucket=resources.BUCKET, Prefix=prefix)
    return [v["Key"] for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]]


def _status(job_id: str) -> str:
    status: str = boto3.client("sagemaker").describe_training_job(TrainingJobName=job_id)["TrainingJobStatus"]
    return status


async def _launch_while_the_account_is_deleted(user_id: str) -> str:
    settings = Settings()
    aws = AwsClients(settings)
    try:
        deps: Deps = await build_deps(aws, settings)
        uploaded = upload_file(user_id, '{"messages": []}\n')
        await project_file(validated(uploaded), deps)
        job = await commands.create_job(CreateJob(model="llm-tuner/tiny-chat", training_file=uploaded.file_id),
                                        user_id, deps)

        async def delete_account() -> None:
            await delete_user_data(UserDeleted(user_id=user_id, until=0), deps)

        racing = dataclasses.replace(deps, sagemaker=CreateAfter(deps.sagemaker, delete_account))
        await launch_job(LaunchRequested(job_id=job.job_id), racing)
        return job.job_id
    finally:
        await aws.close()


def test_a_launch_landing_after_the_accounts_deletion_is_stopped_and_its_late_uploads_deleted(
        emulator: str) -> None:
    user_id = f"user-{os.urandom(6).hex()}"
    job_id = asyncio.run(_launch_while_the_account_is_deleted(user_id))

    # The training job exists (it landed after the deletion), and its own launch stopped it.
    assert _status(job_id) in ("Stopping", "Stopped")
    assert _item(job_id) is None and _item(f"usage#{user_id}") is None  # nothing of the account's jobs is left
    assert _item(f"deleted#{job_id}") is not None  # but the note that SageMaker may still write for it

    # SageMaker writes after the stop (here: an upload the test makes itself, at a known point)...
    late = f"training-jobs/{user_id}/{job_id}/output/model.tar.gz"
    boto3.client("s3").put_object(Bucket=resources.BUCKET, Key=late, Body=b"written after the deletion")
    # ...then says Stopped: its event reaches training's worker, which deletes the job's prefix again.
    poll(lambda: _status(job_id) == "Stopped", 60, "the emulator stops the training job")
    asyncio.run(drain("training", lambda: _item(f"deleted#{job_id}") is None, 60))
    assert _objects(f"training-jobs/{user_id}/") == []
