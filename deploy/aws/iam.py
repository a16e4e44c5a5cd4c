"""Least-privilege IAM for every process, from what its code calls and what its service owns.

`CALLS` lists, per process, the AWS operations its code makes (botocore's names, `service:Operation`), read
from the code: the modules a process imports, less what `NOT_CALLED` says it never runs. A unit test scans the
same modules for client calls (tests/unit/test_cfn_template.py), so a new call without a grant, or a grant
without a call, fails the suite instead of production.

Resources come from `shared.contracts.resources`, by owner: a process may touch its service's tables (and their
indexes), its service's queues (and their DLQs), publish on its service's topic, manage the per-replica
queues of its service's `ReplicaSubscription`s, and use the one bucket (files and training both read what the
other wrote there: training reads normalised training data, files turns a job's results into a file, so the
bucket is not split by prefix). `"*"` appears only where AWS has no resource-level permission for an action;
each such case is in `WILDCARD_REASONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from deploy.aws.processes import Process
from shared.contracts.resources import Resources

Json = dict[str, Any]
Arn = Any  # a string or a CloudFormation expression (Fn::Sub, Fn::GetAtt...)

# SageMaker training job names are the job ids (services/training/commands.py creates them as `ftjob-...`).
TRAINING_JOB_NAME_PREFIX = "ftjob-"

_DYNAMO_WRITE = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
_SQS_CONSUME = ("sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                "sqs:SendMessage")  # SendMessage: the consumer moves a poison message to the DLQ itself
_S3_FILES = ("s3:GetObject", "s3:HeadObject", "s3:PutObject", "s3:CreateMultipartUpload", "s3:UploadPart",
             "s3:CompleteMultipartUpload", "s3:AbortMultipartUpload", "s3:ListMultipartUploads",
             "s3:ListObjectVersions", "s3:DeleteObjects")
_S3_TRAINING = ("s3:GetObject", "s3:HeadObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploads",
                "s3:ListObjectVersions", "s3:DeleteObjects")

# A GPU launch checks its training quota: found by name in the listings, then read (services/training/quotas.py).
_QUOTAS_READ = ("service-quotas:GetServiceQuota", "service-quotas:ListServiceQuotas",
                "service-quotas:ListAWSDefaultServiceQuotas")
CALLS: dict[str, frozenset[str]] = {
    # Hears auth's revocations (and other live events) on a queue of its own per replica (shared/replica.py).
    "gateway": frozenset({"sts:GetCallerIdentity", "sqs:CreateQueue", "sqs:GetQueueAttributes",
                          "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                          "sqs:ChangeMessageVisibility", "sns:Subscribe", "sns:Unsubscribe"}),
    # Scan: a gateway replica's catch-up on revoked sessions (SessionsStore.revoked_since).
    "auth": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:Scan", "dynamodb:TransactWriteItems",
                       "sns:Publish", "sts:GetCallerIdentity"}),
    # Query: a user's files, through the user-files-index (FilesStore.list_for_user).
    "files": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:TransactWriteItems", *_S3_FILES, "sns:Publish",
                        "sts:GetCallerIdentity"}),
    "files-worker": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:TransactWriteItems",
                               *(a for a in _S3_FILES if a != "s3:HeadObject"), "sns:Publish", *_SQS_CONSUME,
                               "sts:GetCallerIdentity"}),
    "training": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:BatchWriteItem", *_S3_TRAINING,
                           "s3:ListObjectsV2", "sns:Publish", "sqs:GetQueueUrl", "sqs:SendMessage",
                           "sagemaker:StopTrainingJob", *_QUOTAS_READ, "logs:DescribeLogStreams",
                           "logs:GetLogEvents", "sts:GetCallerIdentity"}),
    "training-worker": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:BatchWriteItem", *_S3_TRAINING,
                                  "sns:Publish", *_SQS_CONSUME, "sagemaker:CreateTrainingJob",
                                  "sagemaker:StopTrainingJob", *_QUOTAS_READ,
                                  # a job's last metrics steps, read when SageMaker says it ended
                                  "logs:DescribeLogStreams", "logs:FilterLogEvents", "sts:GetCallerIdentity"}),
    "training-reconciler": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:BatchWriteItem", *_S3_TRAINING,
                                      "sns:Publish", "sqs:GetQueueUrl", "sqs:SendMessage",
                                      "sagemaker:DescribeTrainingJob", *_QUOTAS_READ,
                                      "logs:DescribeLogStreams",
                                      "logs:FilterLogEvents", "sts:GetCallerIdentity"}),
}

_COMMANDS_UNUSED = "shared.envelope' CommandQueue: this service sends no commands"
_INBOX_UNUSED = "shared.inbox comes in with shared.worker's `dispatcher`; replica queues have no inbox"

# Operations a process's imports contain but the process never runs, and why: not granted.
NOT_CALLED: dict[str, dict[str, str]] = {
    "gateway": {**{op: _INBOX_UNUSED for op in _DYNAMO_WRITE},
                "sns:Publish": "shared.envelope' Publisher: the gateway publishes nothing",
                "sqs:SendMessage": "replica queues have no DLQ to move messages to, and the gateway sends no commands",
                "sqs:GetQueueUrl": "a replica creates its queue and keeps the URL CreateQueue answers"},
    "auth": {"sqs:GetQueueUrl": _COMMANDS_UNUSED, "sqs:SendMessage": _COMMANDS_UNUSED},
    "files": {"sqs:GetQueueUrl": _COMMANDS_UNUSED, "sqs:SendMessage": _COMMANDS_UNUSED},
}

# Where the IAM action differs from the operation's name (IAM authorises some operations as others).
IAM_ACTIONS: dict[str, tuple[str, ...]] = {
    "dynamodb:TransactWriteItems": ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                    "dynamodb:ConditionCheckItem"),
    "s3:HeadObject": ("s3:GetObject",),
    "s3:CreateMultipartUpload": ("s3:PutObject",),
    "s3:UploadPart": ("s3:PutObject",),  # the presigned part URLs carry the files role's permission
    "s3:CompleteMultipartUpload": ("s3:PutObject",),
    "s3:ListObjectsV2": ("s3:ListBucket",),
    "s3:ListObjectVersions": ("s3:ListBucketVersions",),
    "s3:ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    "s3:DeleteObjects": ("s3:DeleteObject", "s3:DeleteObjectVersion"),  # deletes name each version
    # The request carries Tags and a RoleArn: both are authorised separately.
    "sagemaker:CreateTrainingJob": ("sagemaker:CreateTrainingJob", "sagemaker:AddTags", "iam:PassRole"),
    "service-quotas:GetServiceQuota": ("servicequotas:GetServiceQuota",),
    "service-quotas:ListServiceQuotas": ("servicequotas:ListServiceQuotas",),
    "service-quotas:ListAWSDefaultServiceQuotas": ("servicequotas:ListAWSDefaultServiceQuotas",),
    "sts:GetCallerIdentity": (),  # needs no permission: AWS answers it for any caller
}

WILDCARD_REASONS = {
    "servicequotas:GetServiceQuota": "Service Quotas has no resource-level permission for reading a quota",
    "servicequotas:ListServiceQuotas": "Service Quotas has no resource-level permission for listing quotas",
    "servicequotas:ListAWSDefaultServiceQuotas": "Service Quotas has no resource-level permission for listing quotas",
    "ecr:GetAuthorizationToken": "an ECR login token is account-wide; pulls are then limited to our repositories",
    "cloudwatch:PutMetricData": "metrics have no ARN; limited by a cloudwatch:namespace condition instead",
}

_S3_BUCKET_LEVEL = {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads"}
_SQS_QUEUE_MANAGEMENT = {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes"}
_SNS_SUBSCRIBING = {"sns:Subscribe", "sns:Unsubscribe"}


def iam_actions(operation: str) -> tuple[str, ...]:
    return IAM_ACTIONS.get(operation, (operation,))


def granted_actions(process: str) -> set[str]:
    return {action for op in CALLS[process] for action in iam_actions(op)}


class Refs:
    """How the template names the resources a policy points at (CloudFormation expressions)."""

    def __init__(self, *, table_arn: Callable[[str], Arn], queue_arn: Callable[[str], Arn],
                 topic_arn: Callable[[str], Arn], bucket_arn: Arn, sagemaker_role_arn: Arn,
                 sub: Callable[[str], Arn]) -> None:
        self.table_arn = table_arn
        self.queue_arn = queue_arn
        self.topic_arn = topic_arn
        self.bucket_arn = bucket_arn
        self.sagemaker_role_arn = sagemaker_role_arn
        self.sub = sub  # Fn::Sub of a string with ${AWS::Region}, ${AWS::AccountId}, ${AWS::Partition}


def _statement(sid: str, actions: Iterable[str], resources: list[Arn], condition: Json | None = None) -> Json:
    statement: Json = {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def task_policy(process: Process, resources: Resources, refs: Refs) -> Json:
    """The task role's policy document: each action the process calls, on the resources its service owns."""
    actions = granted_actions(process.name)

    def of(prefix: str) -> set[str]:
        return {a for a in actions if a.startswith(prefix + ":")}

    service = process.service
    statements: list[Json] = []
    tables = [t for t in resources.tables if t.owner == service]
    if of("dynamodb"):
        arns = [arn for t in tables for arn in
                (refs.table_arn(t.name), {"Fn::Join": ["", [refs.table_arn(t.name), "/index/*"]]})]
        statements.append(_statement("OwnTables", of("dynamodb"), arns))
    s3 = of("s3")
    if s3 & _S3_BUCKET_LEVEL:
        statements.append(_statement("BucketListing", s3 & _S3_BUCKET_LEVEL, [refs.bucket_arn]))
    if s3 - _S3_BUCKET_LEVEL:
        statements.append(_statement("BucketObjects", s3 - _S3_BUCKET_LEVEL,
                                     [{"Fn::Join": ["", [refs.bucket_arn, "/*"]]}]))
    topics = [t for t in resources.topics if t.owner == service]
    if "sns:Publish" in actions:
        statements.append(_statement("PublishOwnTopic", ["sns:Publish"], [refs.topic_arn(t.name) for t in topics]))
    replicas = [r for r in resources.replica_subscriptions if r.owner == service]
    if of("sns") & _SNS_SUBSCRIBING:
        statements.append(_statement("ReplicaSubscriptions", of("sns") & _SNS_SUBSCRIBING,
                                     [refs.topic_arn(t) for t in dict.fromkeys(r.topic for r in replicas)]))
    sqs = of("sqs")
    queues = [q for q in resources.queues if q.owner == service]
    if sqs - _SQS_QUEUE_MANAGEMENT and queues:
        statements.append(_statement("OwnQueues", sqs - _SQS_QUEUE_MANAGEMENT,
                                     [refs.queue_arn(n) for q in queues for n in (q.name, q.dlq_name)]))
    if sqs and replicas:
        prefixes = sorted({r.queue_prefix for r in replicas})
        # `llm-tuner-gateway-replica-*` already covers `llm-tuner-gateway-replica-files-*`.
        widest = [p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)]
        arn = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
        statements.append(_statement("ReplicaQueues", sqs, [refs.sub(f"{arn}{prefix}*") for prefix in widest]))
    if of("sagemaker"):
        statements.append(_statement("OwnTrainingJobs", of("sagemaker"), [refs.sub(
            "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:training-job/"
            + TRAINING_JOB_NAME_PREFIX + "*")]))
    if "iam:PassRole" in actions:
        statements.append(_statement("PassOnlyTheSageMakerRole", ["iam:PassRole"], [refs.sagemaker_role_arn],
                                     {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}))
    if of("logs"):
        statements.append(_statement("ReadTrainingLogs", of("logs"), log_group_arns(resources, refs)))
    if of("servicequotas"):
        statements.append(_statement("ReadQuotas", of("servicequotas"), ["*"]))
    return {"Version": "2012-10-17", "Statement": statements}


def log_group_arns(resources: Resources, refs: Refs) -> list[Arn]:
    """The group and its streams (`...:log-group:NAME:log-stream:STREAM` matches `NAME:*`)."""
    return [refs.sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{group}{tail}")
            for group in resources.log_groups for tail in ("", ":*")]
