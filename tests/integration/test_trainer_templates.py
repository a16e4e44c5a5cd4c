"""A real training job, through the local SageMaker emulator, on a base model whose chat template has no generation
markers: the demo model given Mistral-7B-Instruct-v0.3's own template (and its special tokens), passed as the
`model` channel from S3. The data has system messages and several weighted turns, which that template cannot
render by growing prefixes (it puts the system prompt with the last user turn), a tool-call conversation, and
one conversation the template refuses (a tool call id that is not nine alphanumerics): the job must complete,
locate every reply by reply substitution, and skip the refused conversation naming its line.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.support.aws import ROOT, AwsEndpoint, start_emulator_process
from tests.support.chat_templates import MISTRAL_V03, retemplate_demo_model
from tests.support.emulator import ROLE_ARN, Emulator, unique, wait_status
from trainer_image.demo_model import SYSTEM_PROMPT, build_demo_model, demo_facts, write_jsonl

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-tuner-trainer:latest"
FINETUNE = ROOT / "trainer_image" / "finetune.py"
CONVERSATIONS = 12  # multi-turn, with a system message, each ending with a reply
CALL_ID = "lookup001"  # nine alphanumerics, as Mistral's template demands
REFUSED_LINE = CONVERSATIONS + 2  # after the tool-call conversation


def multi_turn(i: int) -> dict[str, Any]:
    facts = demo_facts()
    (q1, a1), (q2, a2), (q3, a3) = facts[3 * i : 3 * i + 3]
    return {"messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": q1}, {"role": "assistant", "content": a1},
        {"role": "user", "content": q2}, {"role": "assistant", "content": a2, "weight": 0},
        {"role": "user", "content": q3}, {"role": "assistant", "content": a3},
    ]}


def tool_call(call_id: str) -> dict[str, Any]:
    call = {"id": call_id, "type": "function", "function": {"name": "lookup", "arguments": '{"animal": "koro"}'}}
    return {"messages": [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What does the koro eat?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "koro: honey"},
        {"role": "assistant", "content": "It eats honey."},
    ], "tools": [{"type": "function", "function": {"name": "lookup", "description": "Facts about an animal.",
                                                   "parameters": {"type": "object"}}}]}


@pytest.fixture(scope="module")
def bucket(aws: AwsEndpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = unique("sm-templates")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    base = tmp_path_factory.mktemp("base")
    model = retemplate_demo_model(build_demo_model(base / "demo"), base / "mistral-template", MISTRAL_V03)
    for path in model.iterdir():
        s3.upload_file(str(path), name, f"base-models/mistral-template/{path.name}")
    data = tmp_path_factory.mktemp("data") / "part-0.jsonl"
    write_jsonl([*(multi_turn(i) for i in range(CONVERSATIONS)), tool_call(CALL_ID), tool_call("call-1")], data)
    s3.upload_file(str(data), name, "data/train/part-0.jsonl")
    return name


@pytest.fixture(scope="module")
def emulator(aws: AwsEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    workdir = tmp_path_factory.mktemp("sagemaker") / "work"
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "SAGEMAKER_EMULATOR_ENTRYPOINT": json.dumps({"*llm-tuner-trainer*": [sys.executable, str(FINETUNE)]}),
           "SAGEMAKER_EMULATOR_LOG_FLUSH_SECONDS": "0.2"}
    process, url = start_emulator_process(workdir, env, workdir.parent / "emulator.log")
    emulator = Emulator(url, workdir, process)
    yield emulator
    emulator.terminate()


def channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}}


def training_summary(job: dict[str, Any]) -> dict[str, Any]:
    bucket, _, key = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").partition("/")
    archive = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile("training_summary.json")
        assert member is not None
        summary: dict[str, Any] = json.loads(member.read())
    return summary


def test_a_job_on_a_template_without_generation_markers_completes(emulator: Emulator, bucket: str) -> None:
    sm, name = emulator.client(), unique("mistral-template")

    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE_ARN,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"n_epochs": "1", "seed": "7"},
        InputDataConfig=[channel("train", f"s3://{bucket}/data/train/"),
                         channel("model", f"s3://{bucket}/base-models/mistral-template/")],
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600})
    done = wait_status(sm, name, timeout_s=300)

    log = (emulator.workdir / name / "algo-1.log").read_text()
    assert done["TrainingJobStatus"] == "Completed", (done.get("FailureReason"), log[-3000:])
    summary = training_summary(done)
    # Every conversation's replies were found by reply substitution (prefix rendering fails on this template
    # whenever there is a system message), and the refused one was skipped with its line and the reason.
    assert summary["mask_methods"] == {"reply_substitution": CONVERSATIONS + 1}
    assert summary["mask_method"] == "reply_substitution"
    assert summary["skipped_examples"] == 1
    [skipped] = summary["skipped"]
    assert skipped["source"] == f"part-0.jsonl:{REFUSED_LINE}"
    assert "Tool call IDs should be alphanumeric strings with length 9" in skipped["reason"]
    assert summary["examples"] == CONVERSATIONS + 1 and summary["assistant_tokens_per_epoch"] > 0
    # This template drops a system prompt unless the conversation ends with a user turn: reported, not hidden.
    assert summary["template_omissions"] == CONVERSATIONS + 1
    assert f"part-0.jsonl:{REFUSED_LINE}: the chat template failed" in log
    assert "assistant replies located by reply substitution (13)" in log
