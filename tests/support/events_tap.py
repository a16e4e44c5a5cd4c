"""A test queue subscribed to a topic without a filter: what a service published, read back over SQS."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3


class Tap:
    def __init__(self, topic_arn: str) -> None:
        self.sqs = boto3.client("sqs")
        self.url = self.sqs.create_queue(QueueName=f"tap-{uuid.uuid4().hex[:12]}")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns").subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn,
                                      Attributes={"RawMessageDelivery": "true"})
        self.seen: list[dict[str, Any]] = []

    def wait_for(self, predicate: Any, deadline_s: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            for event in self.seen:
                if predicate(event):
                    return event
            for message in self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                                    WaitTimeSeconds=1).get("Messages", []):
                self.seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        raise TimeoutError(f"no matching event within {deadline_s}s; saw {[e.get('type') for e in self.seen]}")
