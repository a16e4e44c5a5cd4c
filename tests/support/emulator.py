"""Driving the local SageMaker emulator from a test: the running process and its clients, polling with a
deadline, unique names, and the SQS queue that EventBridge feeds with training-job state changes."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.support.polling import wait_for

ROLE_ARN = "arn:aws:iam::123456789012:role/llm-tuner-sagemaker"
TERMINAL = ("Completed", "Failed", "Stopped")


def wait_status(sm: Any, name: str, statuses: tuple[str, ...] = TERMINAL,
                timeout_s: float = 30) -> dict[str, Any]:
    return wait_for(lambda: sm.describe_training_job(TrainingJobName=name),
                    lambda d: d["TrainingJobStatus"] in statuses, f"{name} to be {statuses}", timeout_s)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass
class Emulator:
    url: str
    workdir: Path
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        return boto3.client("sagemaker", endpoint_url=self.url, region_name="us-east-1")

    def pids(self, job: str, host: str | None = None) -> list[int]:
        """The pids a fake entry point wrote (`host`: of that instance of a multi-instance job)."""
        root = self.workdir / job / host if host else self.workdir / job
        path = root / "opt_ml" / "output" / "pids"
        return wait_for(lambda: json.loads(path.read_text()) if path.exists() else [], bool, f"{job}'s pids")

    def interrupt(self, job: str) -> httpx.Response:
        """The emulator's test-only control endpoint (not SageMaker's API): reclaim a spot job's instance."""
        return httpx.post(f"{self.url}/_emulator/jobs/{job}/interrupt", timeout=10)

    def terminate(self) -> None:
        """SIGTERM, as a process manager stops it; uvicorn re-raises the signal once shut down cleanly."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) in (0, -signal.SIGTERM)


def state_change_queue(prefix: str) -> str:
    """An SQS queue that an EventBridge rule feeds with SageMaker's training-job state changes: its URL."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    url = sqs.create_queue(QueueName=unique(f"{prefix}-changes"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = unique(f"{prefix}-state")
    events.put_rule(Name=rule, State="ENABLED", EventPattern=json.dumps(
        {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Training Job State Change"]}))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": arn}])
    return str(url)
