"""training's integration tests against the embedded AWS: a file put where files would put it and its events
published through files' real topic (the training worker's projection takes them in), a job read over HTTP, and
what waits on training's work queue."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3
import httpx

from shared.contracts import resources
from shared.contracts.files_events import FileEvent, FileRejected, FileUploaded, FileValidated
from shared.envelope import new_event
from tests.support.accounts import bearer


def upload_file(user_id: str, content: str) -> FileUploaded:
    """The object in the bucket, and files' `file.uploaded` about it (not published yet)."""
    file_id = f"file-{os.urandom(12).hex()}"
    key = f"files/{user_id}/{file_id}"
    boto3.client("s3").put_object(Bucket=resources.BUCKET, Key=key, Body=content.encode())
    return FileUploaded(file_id=file_id, user_id=user_id, purpose="fine-tune", filename="t.jsonl",
                        bytes=len(content.encode()), s3_uri=f"s3://{resources.BUCKET}/{key}")


def validated(uploaded: FileUploaded, examples: int = 20, **report: Any) -> FileValidated:
    return FileValidated(**uploaded.model_dump(), examples=examples, **report)


def rejected(uploaded: FileUploaded, error: str = "Invalid file format. Line 3 is not valid JSON.") -> FileRejected:
    return FileRejected(**uploaded.model_dump(), examples=0, error=error)


def publish_file_event(provisioned: dict[str, Any], event: FileEvent) -> None:
    """Publish as files does, to its topic with the type attribute subscriptions filter on."""
    envelope = new_event(event, user_id=event.user_id)
    boto3.client("sns").publish(TopicArn=provisioned["topics"][resources.FILES_TOPIC],
                                Message=envelope.model_dump_json(),
                                MessageAttributes={"type": {"DataType": "String", "StringValue": envelope.type}})


def announce_file(provisioned: dict[str, Any], user_id: str, content: str, status: str = "validated",
                  **report: Any) -> str:
    """A file uploaded and then validated (`report`: the validation's statistics) or rejected, as files announces
    it; its id."""
    uploaded = upload_file(user_id, content)
    publish_file_event(provisioned, uploaded)
    publish_file_event(provisioned, rejected(uploaded) if status == "rejected" else validated(uploaded, **report))
    return uploaded.file_id


def create_job(api: str, session: dict[str, Any], file_id: str) -> str:
    """POST /v1/fine_tuning/jobs for tiny-chat on that file; the job's id."""
    created = httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(session),
                         json={"model": "llm-tuner/tiny-chat", "training_file": file_id})
    assert created.status_code == 200, created.text
    job_id: str = created.json()["id"]
    return job_id


def get_job(api: str, session: dict[str, Any], job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{api}/v1/fine_tuning/jobs/{job_id}", headers=bearer(session)).json()
    return body


def drop_training_queue() -> list[dict[str, Any]]:
    """Lose whatever is waiting on training's queue (events, commands): what the reconciler must make up for.
    The bodies lost."""
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=resources.TRAINING_QUEUE)["QueueUrl"]
    dropped: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return dropped
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            dropped.append(json.loads(message["Body"]))
