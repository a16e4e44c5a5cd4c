"""The customer managed KMS key the stack's SNS topics are encrypted with (SSE-KMS), and its key policy.

Events carry personal data (`user.created` an email address), so every topic is encrypted at rest with this key.
Who may use it:
- the account's IAM policies (the key policy's usual first statement): each task role that publishes gets
  kms:GenerateDataKey and kms:Decrypt on this key and nothing else (deploy.aws.iam: sns:Publish);
- CloudWatch, which publishes alarms to the alarm topic (SNS developer guide, "Enable compatibility between event
  sources from AWS services and encrypted topics").
SNS decrypts a message before it delivers it, so the queues subscribed to a topic need nothing of this key: they
stay encrypted with SQS-managed keys (SSE-SQS), which SNS and EventBridge deliver to without any key policy, and
so do the gateway replicas' queues, which the code creates at start.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

LOGICAL_ID = "MessagingKey"
# Services that publish to our encrypted topics from outside the task roles: CloudWatch alarms (AlarmTopic).
PUBLISHING_SERVICES = ("cloudwatch.amazonaws.com",)
SERVICE_ACTIONS = ["kms:Decrypt", "kms:GenerateDataKey*"]


def key_properties(prefix: str) -> Json:
    """No Tags: moto's CloudFormation, which deploys the template in tests/integration/test_cfn_deploy.py, reads a
    key's tags in another form than CloudFormation's and fails; the alias names the key instead."""
    return {
        "Description": f"{prefix}: encrypts the SNS topics (events, security alerts, alarms)",
        "EnableKeyRotation": True,
        "PendingWindowInDays": 30,
        "KeyPolicy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "AccountIamPolicies", "Effect": "Allow",
             "Principal": {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "AwsServicesPublishToEncryptedTopics", "Effect": "Allow",
             "Principal": {"Service": list(PUBLISHING_SERVICES)}, "Action": SERVICE_ACTIONS, "Resource": "*",
             "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}},
        ]},
    }


def add_key(add: Any, prefix: str) -> None:
    """The key, and an alias that names it in the console (`alias/<prefix>-messaging`)."""
    # Deleted with the stack (after KMS's waiting period), like the topics it encrypts.
    add(LOGICAL_ID, "AWS::KMS::Key", key_properties(prefix))
    add(LOGICAL_ID + "Alias", "AWS::KMS::Alias", {"AliasName": f"alias/{prefix}-messaging",
                                                   "TargetKeyId": {"Ref": LOGICAL_ID}})


def encrypted(topic_properties: Json) -> Json:
    return {**topic_properties, "KmsMasterKeyId": {"Ref": LOGICAL_ID}}
