"""The one resource description, applied to the embedded AWS: everything exists, wired, and twice is once."""

from __future__ import annotations

import json
from typing import Any

import boto3

from deploy.local import provision
from shared.contracts import resources


def test_provisioning_is_idempotent_and_complete(provisioned: dict[str, Any]) -> None:
    again = provision.apply(resources.describe())
    assert again == provisioned
    spec = resources.describe()
    db = boto3.client("dynamodb")
    indexes = {t.name: {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]]
                        for i in db.describe_table(TableName=t.name)["Table"].get("GlobalSecondaryIndexes", [])}
               for t in spec.tables}
    assert indexes[resources.USERS_TABLE] == {"email-index": ["email"]}
    assert indexes[resources.FILES_TABLE] == {"user-files-index": ["user_id"]}
    assert indexes[resources.JOBS_TABLE] == {"user-index": ["user_id", "created_at"],
                                             "status-index": ["active_status", "created_at"]}

    s3 = boto3.client("s3")
    assert s3.get_bucket_versioning(Bucket=spec.bucket.name)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=spec.bucket.name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"

    sqs = boto3.client("sqs")
    for queue in spec.queues:
        attrs = sqs.get_queue_attributes(QueueUrl=provisioned["queues"][queue.name],
                                         AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(queue.dlq_name)
        assert int(redrive["maxReceiveCount"]) == queue.max_receives

    sns = boto3.client("sns")
    policies = {}
    for topic, topic_arn in provisioned["topics"].items():
        for sub in sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]:
            attributes = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])["Attributes"]
            if "FilterPolicy" in attributes:
                queue = sub["Endpoint"].rsplit(":", 1)[1]
                policies[topic, queue] = json.loads(attributes["FilterPolicy"])["type"]
    assert policies[resources.FILES_TOPIC, resources.FILES_QUEUE] == ["file.uploaded"]
    assert policies[resources.TRAINING_TOPIC, resources.FILES_QUEUE] == ["training.job.succeeded"]
    assert "file.validated" in policies[resources.FILES_TOPIC, resources.TRAINING_QUEUE]
    cors = s3.get_bucket_cors(Bucket=spec.bucket.name)["CORSRules"][0]
    assert cors["AllowedMethods"] == ["PUT"] and cors["ExposeHeaders"] == ["ETag"]
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=spec.bucket.name)["Rules"][0]
    assert lifecycle["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 2

    targets = boto3.client("events").list_targets_by_rule(Rule=resources.SAGEMAKER_STATE_RULE)["Targets"]
    assert [t["Arn"].rsplit(":", 1)[1] for t in targets] == [resources.TRAINING_QUEUE]
