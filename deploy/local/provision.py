"""Apply `shared.contracts.resources` to an AWS endpoint (the embedded one, LocalStack or a dev account), idempotently.

Each step reads what exists and creates or updates only what differs, so running it twice changes nothing.
`python -m deploy.local.provision` uses the standard AWS_* environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from deploy.local.demo_model import install_demo_model
from shared.contracts.resources import Queue, Resources, Table, describe

log = logging.getLogger(__name__)


def _clients(region: str) -> dict[str, Any]:
    config = Config(region_name=region, connect_timeout=3, read_timeout=30,
                    retries={"mode": "standard", "max_attempts": 4})
    return {name: boto3.client(name, config=config)  # type: ignore[call-overload]
            for name in ("dynamodb", "s3", "sns", "sqs", "events", "logs", "sts")}


def table_request(table: Table) -> dict[str, Any]:
    keys = {table.hash_key} | ({table.range_key} if table.range_key else set())
    for index in table.indexes:
        keys |= {index.hash_key} | ({index.range_key} if index.range_key else set())

    def schema(hash_key: Any, range_key: Any) -> list[dict[str, str]]:
        return [{"AttributeName": hash_key.name, "KeyType": "HASH"}] + (
            [{"AttributeName": range_key.name, "KeyType": "RANGE"}] if range_key else [])

    request: dict[str, Any] = {
        "TableName": table.name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": k.name, "AttributeType": k.type}
                                 for k in sorted(keys, key=lambda k: k.name)],
        "KeySchema": schema(table.hash_key, table.range_key),
    }
    if table.indexes:
        request["GlobalSecondaryIndexes"] = [
            {"IndexName": i.name, "KeySchema": schema(i.hash_key, i.range_key),
             "Projection": {"ProjectionType": "ALL"}} for i in table.indexes]
    return request


def ensure_table(db: Any, table: Table) -> None:
    try:
        db.describe_table(TableName=table.name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        db.create_table(**table_request(table))
        db.get_waiter("table_exists").wait(TableName=table.name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        log.info("created table %s", table.name)
    if table.ttl_attribute:
        db.update_time_to_live(TableName=table.name, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": table.ttl_attribute})


def ensure_bucket(s3: Any, name: str, region: str, versioning: bool, encryption: str,
                  cors_origins: tuple[str, ...] = (), abort_incomplete_uploads_days: int = 0) -> None:
    try:
        s3.head_bucket(Bucket=name)
    except ClientError:
        kwargs: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        log.info("created bucket %s", name)
    if versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": encryption}}]})
    s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True})
    if cors_origins:
        s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [{
            "AllowedOrigins": list(cors_origins), "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"],
            "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3600}]})
    if abort_incomplete_uploads_days:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [{
            "ID": "abort-incomplete-multipart-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort_incomplete_uploads_days}}]})


def ensure_queue(sqs: Any, queue: Queue) -> tuple[str, str]:
    dlq_url = sqs.create_queue(QueueName=queue.dlq_name, Attributes={
        "MessageRetentionPeriod": str(queue.dlq_retention_s)})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {
        "VisibilityTimeout": str(queue.visibility_timeout_s),
        "MessageRetentionPeriod": str(queue.retention_s),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receives)}),
    }
    try:
        url = sqs.create_queue(QueueName=queue.name, Attributes=attributes)["QueueUrl"]
    except ClientError as exc:  # exists with other attributes: bring them up to date
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=queue.name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _queue_policy(queue_arn: str, source_arns: list[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "AllowOwnTopicsAndRules", "Effect": "Allow",
        "Principal": {"Service": ["sns.amazonaws.com", "events.amazonaws.com"]},
        "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": source_arns}}}]})


def apply(resources: Resources, region: str | None = None) -> dict[str, Any]:
    """Create or update everything; returns the names and ARNs the services need."""
    region = region or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    c = _clients(region)
    for table in resources.tables:
        ensure_table(c["dynamodb"], table)
    b = resources.bucket
    ensure_bucket(c["s3"], b.name, region, b.versioning, b.encryption, b.cors_origins,
                  b.abort_incomplete_uploads_days)
    topic_arns = {t.name: c["sns"].create_topic(Name=t.name)["TopicArn"] for t in resources.topics}
    queues = {q.name: ensure_queue(c["sqs"], q) for q in resources.queues}

    sources: dict[str, list[str]] = {name: [] for name in queues}
    for sub in resources.subscriptions:
        topic_arn, (_, queue_arn) = topic_arns[sub.topic], queues[sub.queue]
        sources[sub.queue].append(topic_arn)
        existing = [s for s in c["sns"].list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]
                    if s["Endpoint"] == queue_arn]
        arn = existing[0]["SubscriptionArn"] if existing else c["sns"].subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True)["SubscriptionArn"]
        c["sns"].set_subscription_attributes(SubscriptionArn=arn, AttributeName="FilterPolicy",
                                             AttributeValue=json.dumps({"type": list(sub.event_types)}))
        c["sns"].set_subscription_attributes(SubscriptionArn=arn, AttributeName="RawMessageDelivery",
                                             AttributeValue=str(sub.raw_delivery).lower())
    for rule in resources.rules:
        rule_arn = c["events"].put_rule(Name=rule.name, Description=rule.description,
                                        EventPattern=json.dumps(rule.pattern), State="ENABLED")["RuleArn"]
        sources[rule.queue].append(rule_arn)
        c["events"].put_targets(Rule=rule.name, Targets=[{"Id": rule.queue, "Arn": queues[rule.queue][1]}])
    for name, arns in sources.items():
        url, arn = queues[name]
        if arns:
            c["sqs"].set_queue_attributes(QueueUrl=url, Attributes={"Policy": _queue_policy(arn, arns)})
    for group in resources.log_groups:
        try:
            c["logs"].create_log_group(logGroupName=group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
    return {"topics": topic_arns, "queues": {n: u for n, (u, _) in queues.items()}, "bucket": b.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-model", action="store_true", help="also build and upload the tiny demo model")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bucket = os.environ.get("S3_BUCKET_NAME", describe().bucket.name)
    result = apply(describe(bucket))
    if args.demo_model:
        install_demo_model(args.data_dir, bucket)
        result["demo_model"] = "installed"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
