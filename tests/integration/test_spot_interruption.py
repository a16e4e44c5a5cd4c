"""A spot interruption in the local SageMaker emulator, with the real trainer (trainer_image/finetune.py).

The emulator's test-only control endpoint `POST /_emulator/jobs/{name}/interrupt` (not SageMaker's API)
reclaims the managed-spot job's "instance" once its first checkpoint is in S3: SIGTERM to the container,
SecondaryStatus Interrupted, the checkpoints synced to CheckpointConfig.S3Uri, then a fresh start that
downloads them into SM_CHECKPOINT_DIR. The resumed run must start from the checkpoint's step, not from 0.

The interruption lands at a known step whatever the machine's speed: the job's environment sets the trainer's
test-only LLMT_TRAINER_HOLD_AT_CHECKPOINT, so the first attempt holds after its first checkpoint (step 5) until
the SIGTERM arrives; the release file is created only once that attempt has ended.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.aws import ROOT, AwsEndpoint, start_emulator_process
from tests.support.emulator import ROLE_ARN, Emulator, state_change_queue, unique, wait_status
from tests.support.polling import wait_for
from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer.contract import HOLD_AT_CHECKPOINT_ENV

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-tuner-trainer:latest"
FINETUNE = ROOT / "trainer_image" / "finetune.py"
# 20 examples in batches of 4: 5 steps an epoch, a checkpoint at each epoch's end (step 5 first, where the
# first attempt holds until it is interrupted).
HYPERPARAMETERS = {"n_epochs": "3", "batch_size": "4", "learning_rate": "0.003", "seed": "7"}
FIRST_CHECKPOINT_STEP = 5
TOTAL_STEPS = 15
RESTART_DELAY_S = 1.5


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture(scope="module")
def bucket(aws: AwsEndpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = unique("sm-spot")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    data = tmp_path_factory.mktemp("data") / "part-0.jsonl"
    write_jsonl(make_demo_dataset(20, seed=0), data)
    s3.upload_file(str(data), name, "data/train/part-0.jsonl")
    return name


@pytest.fixture(scope="module")
def state_changes(aws: AwsEndpoint) -> str:
    return state_change_queue("sm-spot")


@pytest.fixture(scope="module")
def emulator(aws: AwsEndpoint, state_changes: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("sagemaker") / "work"
    env = {**os.environ,
           "HF_HUB_OFFLINE": "1",
           "SAGEMAKER_EMULATOR_ENTRYPOINT": json.dumps({"*llm-tuner-trainer*": [sys.executable, str(FINETUNE)]}),
           "SAGEMAKER_EMULATOR_STOP_GRACE_SECONDS": "20",  # time to write the SIGTERM checkpoint
           "SAGEMAKER_EMULATOR_SPOT_RESTART_DELAY_SECONDS": str(RESTART_DELAY_S),
           "SAGEMAKER_EMULATOR_LOG_FLUSH_SECONDS": "0.2",
           "SAGEMAKER_EMULATOR_CHECKPOINT_SYNC_SECONDS": "0.3"}
    process, url = start_emulator_process(workdir, env, workdir.parent / "emulator.log")
    emulator = Emulator(url, workdir, process)
    yield emulator
    emulator.terminate()


def create_training_job(sm: Any, name: str, bucket: str, demo_model: Path, checkpoint_prefix: str, hold: str,
                        spot: bool = False, instances: int = 1) -> None:
    """The trainer on the demo data, checkpointing to `checkpoint_prefix`, holding after its first checkpoint until
    `hold` exists (a spot job on a GPU type it runs on the CPU, or an on-demand CPU one), on `instances` hosts."""
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE_ARN,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        HyperParameters={**HYPERPARAMETERS, "model_id": str(demo_model)},
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/data/train/"}}}],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge" if spot else "ml.m5.large", "InstanceCount": instances,
                        "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600, **({"MaxWaitTimeInSeconds": 1200} if spot else {})},
        **({"EnableManagedSpotTraining": True} if spot else {}),
        CheckpointConfig={"S3Uri": f"s3://{bucket}/{checkpoint_prefix}"},
        Environment={HOLD_AT_CHECKPOINT_ENV: hold})


def metric_steps(text: str) -> list[int]:
    return [json.loads(m)["step"] for m in re.findall(r"^METRICS (.*)$", text, flags=re.M)]


@pytest.mark.parametrize("instances", [1, 2], ids=["one instance", "two instances"])
def test_an_interrupted_spot_job_resumes_from_its_checkpoint(
    emulator: Emulator, bucket: str, demo_model: Path, state_changes: str, tmp_path: Path, instances: int
) -> None:
    """On two instances (torchrun on each, gloo) the same holds: algo-1's rank 0 writes the checkpoint, both hosts
    get it back from S3 after the interruption, and the two processes resume from its step together."""
    sm, s3 = emulator.client(), boto3.client("s3")
    name = unique("spot")
    release = tmp_path / "release-the-trainer"
    checkpoint_prefix = f"checkpoints/{name}/"
    create_training_job(sm, name, bucket, demo_model, checkpoint_prefix, str(release), spot=True,
                        instances=instances)

    def checkpoint_states() -> list[str]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=checkpoint_prefix)
        return [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/trainer_state.json")
                and "/checkpoint-" in o["Key"]]

    # GIVEN the first attempt held after its first checkpoint, which is in S3
    wait_for(checkpoint_states, bool, "the first checkpoint in S3", timeout_s=120)
    # WHEN its spot instance is reclaimed
    response = emulator.interrupt(name)
    assert response.status_code == 202, response.text
    wait_for(lambda: [t["Status"] for t in sm.describe_training_job(TrainingJobName=name)
                      ["SecondaryStatusTransitions"]], lambda s: "Interrupted" in s, "the first attempt to end")
    release.touch()  # the restarted attempt must not hold
    done = wait_status(sm, name, timeout_s=240)

    assert (done["TrainingJobStatus"], done["SecondaryStatus"]) == ("Completed", "Completed"), done
    transitions = [t["Status"] for t in done["SecondaryStatusTransitions"]]
    assert transitions == ["Starting", "Downloading", "Training", "Interrupted",
                           "Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert "spot" in done["SecondaryStatusTransitions"][3]["StatusMessage"]
    assert done["BillableTimeInSeconds"] < done["TrainingTimeInSeconds"]

    # The container log: the first run, then the resumed one (each starts with "fine-tune starting"; on two
    # instances algo-1's holds rank 0, whose lines are the job's, and the entry point says it once more before it
    # becomes torchrun: those parts train nothing).
    log = (emulator.workdir / name / "algo-1.log").read_text()
    runs = [run for run in log.split("fine-tune starting")[1:] if "base model:" in run]
    assert len(runs) == 2, log[-3000:]
    if instances == 2:
        assert all("world size 2 (2 hosts x 1 process)" in run for run in runs), log[-3000:]
    first, resumed = metric_steps(runs[0]), metric_steps(runs[1])
    assert first == list(range(1, FIRST_CHECKPOINT_STEP + 1)), runs[0][-3000:]  # stopped while held
    assert f"Training stopped by SIGTERM at step {FIRST_CHECKPOINT_STEP}/{TOTAL_STEPS}" in runs[0]
    # THEN the restarted attempt resumes from that checkpoint, synced to S3 and downloaded again, not from 0
    assert f"resuming from the checkpoint at step {FIRST_CHECKPOINT_STEP}/{TOTAL_STEPS}" in runs[1]
    assert resumed == list(range(FIRST_CHECKPOINT_STEP + 1, TOTAL_STEPS + 1))
    sqs, seen = boto3.client("sqs"), []

    def received() -> list[str]:
        for message in sqs.receive_message(QueueUrl=state_changes, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1).get("Messages", []):
            detail = json.loads(message["Body"])["detail"]
            if detail["TrainingJobName"] == name:
                seen.append(detail["SecondaryStatus"])
        return seen

    wait_for(received, lambda s: "Completed" in s, "the Completed state change")
    assert seen.count("Interrupted") == 1 and seen.count("Training") == 2  # SQS does not keep the order
    assert done["ModelArtifacts"]["S3ModelArtifacts"] == f"s3://{bucket}/output/{name}/output/model.tar.gz"


def test_an_unknown_job_cannot_be_interrupted(emulator: Emulator) -> None:
    response = emulator.interrupt(unique("no-such-job"))
    assert (response.status_code, response.json()["__type"]) == (400, "ValidationException"), response.text


def test_a_stopped_job_keeps_its_checkpoint_and_a_new_job_starts_from_it(
    emulator: Emulator, bucket: str, demo_model: Path, tmp_path: Path
) -> None:
    """What pause and resume rest on (services/training/pausing.py), as SageMaker does it: StopTrainingJob ends the
    job Stopped with the checkpoint the trainer wrote on the SIGTERM synced to CheckpointConfig.S3Uri, and a new
    training job (another name) with the same CheckpointConfig starts with those checkpoints downloaded into
    SM_CHECKPOINT_DIR, so the trainer resumes from the checkpoint's step instead of step 0."""
    sm, s3 = emulator.client(), boto3.client("s3")
    first, second = unique("part"), unique("part")
    release = tmp_path / "holds"
    release.mkdir()
    checkpoint_prefix = f"checkpoints/{first}/"

    def create(name: str) -> None:
        create_training_job(sm, name, bucket, demo_model, checkpoint_prefix, str(release / "{job}"))

    def checkpoint_states() -> list[str]:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=checkpoint_prefix)
        return [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/trainer_state.json")]

    create(first)
    wait_for(checkpoint_states, bool, "the first checkpoint in S3", timeout_s=120)  # held right after it
    sm.stop_training_job(TrainingJobName=first)
    stopped = wait_status(sm, first, timeout_s=120)
    assert (stopped["TrainingJobStatus"], stopped["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert any(f"checkpoint-{FIRST_CHECKPOINT_STEP:08d}/" in key for key in checkpoint_states())

    (release / second).touch()
    create(second)
    done = wait_status(sm, second, timeout_s=240)
    assert done["TrainingJobStatus"] == "Completed", done.get("FailureReason")
    log = (emulator.workdir / second / "algo-1.log").read_text()
    assert f"resuming from the checkpoint at step {FIRST_CHECKPOINT_STEP}/{TOTAL_STEPS}" in log, log[-3000:]
    assert metric_steps(log) == list(range(FIRST_CHECKPOINT_STEP + 1, TOTAL_STEPS + 1))
