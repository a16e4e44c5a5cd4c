"""The embedded AWS keeps its state in a directory across restarts (deploy/local/aws_state.py): a clean stop
keeps everything; a kill -9 keeps what the last snapshot held; the bodies of deleted objects do not pile up; and
a body is read from its file on demand, so restoring does not read the bytes kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from deploy.local.aws_state import SNAPSHOT_FILE, changes_state
from deploy.local.cluster import free_port
from tests.support.aws import wait_http
from tests.support.polling import poll, wait_for

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@contextmanager
def embedded_aws(state: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.local.embedded_aws", "-p", str(port), "--state-dir",
                                 str(state)], stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/moto-api/", proc=proc)
            yield proc, {name: boto3.client(name, endpoint_url=url, **CREDENTIALS)  # type: ignore[call-overload]
                         for name in ("dynamodb", "s3", "sqs", "sns")}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def _table(db: Any) -> None:
    db.create_table(TableName="things", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")


def test_a_clean_stop_keeps_tables_objects_uploads_queues_and_subscriptions(tmp_path: Path) -> None:
    state, log = tmp_path / "aws", tmp_path / "moto.log"
    body = os.urandom(3 << 20)
    with embedded_aws(state, log) as (_, c):
        _table(c["dynamodb"])
        c["dynamodb"].put_item(TableName="things", Item={"pk": {"S": "a"}, "n": {"N": "7"}})
        c["s3"].create_bucket(Bucket="kept-bucket")
        c["s3"].put_object(Bucket="kept-bucket", Key="data/one.bin", Body=body)
        upload = c["s3"].create_multipart_upload(Bucket="kept-bucket", Key="open.bin")["UploadId"]
        c["s3"].upload_part(Bucket="kept-bucket", Key="open.bin", UploadId=upload, PartNumber=1, Body=b"part one")
        queue = c["sqs"].create_queue(QueueName="kept-queue")["QueueUrl"]
        topic = c["sns"].create_topic(Name="kept-topic")["TopicArn"]
        c["sns"].subscribe(TopicArn=topic, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:123456789012:kept-queue",
                           Attributes={"RawMessageDelivery": "true"})
        c["sns"].publish(TopicArn=topic, Message="before the restart")

    with embedded_aws(state, log) as (_, c):
        assert c["dynamodb"].get_item(TableName="things", Key={"pk": {"S": "a"}})["Item"]["n"] == {"N": "7"}
        assert c["s3"].get_object(Bucket="kept-bucket", Key="data/one.bin")["Body"].read() == body
        ranged = c["s3"].get_object(Bucket="kept-bucket", Key="data/one.bin", Range="bytes=100-199")["Body"].read()
        assert ranged == body[100:200]
        parts = c["s3"].list_parts(Bucket="kept-bucket", Key="open.bin", UploadId=upload)["Parts"]
        assert [p["Size"] for p in parts] == [len(b"part one")]
        messages = c["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        assert [m["Body"] for m in messages] == ["before the restart"]
        c["sns"].publish(TopicArn=topic, Message="after the restart")  # the subscription still delivers
        later = c["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=5).get("Messages", [])
        assert [m["Body"] for m in later] == ["after the restart"]


def test_a_kill_keeps_what_the_last_snapshot_held(tmp_path: Path) -> None:
    state, log = tmp_path / "aws", tmp_path / "moto.log"
    with embedded_aws(state, log) as (proc, c):
        _table(c["dynamodb"])
        c["dynamodb"].put_item(TableName="things", Item={"pk": {"S": "written"}})
        # A snapshot follows each change within its interval: wait for one that holds the write, then kill.
        wait_for(lambda: (state / SNAPSHOT_FILE).exists() and b"written" in (state / SNAPSHOT_FILE).read_bytes(),
                 bool, "a snapshot holding the write")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with embedded_aws(state, log) as (_, c):
        assert "Item" in c["dynamodb"].get_item(TableName="things", Key={"pk": {"S": "written"}})


def test_bodies_of_deleted_objects_are_removed_and_bodies_load_on_demand(tmp_path: Path) -> None:
    state, log = tmp_path / "aws", tmp_path / "moto.log"
    with embedded_aws(state, log) as (_, c):
        c["s3"].create_bucket(Bucket="kept-bucket")
        for i in range(3):
            c["s3"].put_object(Bucket="kept-bucket", Key=f"k{i}", Body=f"body {i}".encode())
        c["s3"].delete_object(Bucket="kept-bucket", Key="k0")
        c["s3"].put_object(Bucket="kept-bucket", Key="k1", Body=b"replaced")
    with embedded_aws(state, log) as (_, c):
        bodies = {p.read_bytes() for p in (state / "s3").iterdir()}
        assert bodies == {b"replaced", b"body 2"}  # what the keys hold now, nothing else
        # A body is read from its file when asked for: changed on disk, the object reads the change.
        path = next(p for p in (state / "s3").iterdir() if p.read_bytes() == b"body 2")
        path.write_bytes(b"BODY 2")
        unchecked = boto3.client("s3", endpoint_url=c["s3"].meta.endpoint_url, **CREDENTIALS,
                                 config=Config(response_checksum_validation="when_required"))
        assert unchecked.get_object(Bucket="kept-bucket", Key="k2")["Body"].read() == b"BODY 2"
    poll(lambda: (state / SNAPSHOT_FILE).exists(), what="the snapshot at stop")


@pytest.mark.parametrize(("environ", "changes"), [
    ({"REQUEST_METHOD": "GET"}, False),
    ({"REQUEST_METHOD": "PUT"}, True),
    ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.Query"}, False),
    ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"}, True),
    ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"}, False),
    ({"REQUEST_METHOD": "POST", "HTTP_X_AMZ_TARGET": "AmazonSQS.DeleteMessage"}, True),
    ({"REQUEST_METHOD": "POST", "QUERY_STRING": "Action=ListTopics"}, False),
    ({"REQUEST_METHOD": "POST", "QUERY_STRING": ""}, True),
])
def test_which_requests_make_a_snapshot_due(environ: dict[str, str], changes: bool) -> None:
    assert changes_state(environ) is changes
