"""Least-privilege IAM for every process, from what its code calls and what its service owns.

`CALLS` lists, per process, the AWS operations its code makes (botocore's names, `service:Operation`), read
from the code: the modules a process imports, less what `NOT_CALLED` says it never runs. A unit test scans the
same modules for client calls (tests/unit/test_cfn_template.py), so a new call without a grant, or a grant
without a call, fails the suite instead of production.

Resources come from `shared.contracts.resources`, by owner: a process may touch its service's tables (and their
indexes), its service's queues (and their DLQs), publish on its service's topic (and use the messaging key that
encrypts it), manage the per-replica queues of its service's `ReplicaSubscription`s, and use its prefixes of the
bucket only (`deploy.aws.bucket_access`), never the whole bucket. SageMaker
actions name only our own resources, by name prefix (`SAGEMAKER_RESOURCE_TYPES`: which resource types the
Service Authorization Reference authorises each action on). `"*"` appears only where AWS has no resource-level
permission for an action; each such case is in `WILDCARD_REASONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from deploy.aws.bucket_access import BUCKET_PREFIXES, BucketPrefixes
from deploy.aws.cfn import objects_arn
from deploy.aws.processes import Process
from shared.contracts.resources import Resources

Json = dict[str, Any]
Arn = Any  # a string or a CloudFormation expression (Fn::Sub, Fn::GetAtt...)

# SageMaker training job names are the job ids (services/training/commands.py creates them as `ftjob-...`).
TRAINING_JOB_NAME_PREFIX = "ftjob-"
# Serving's SageMaker models, endpoint configs, endpoints and inference components: `llmt-{hash}`,
# `llmt-{hash}-base`, `llmt-a-{hash}` (services/inference). SageMaker lower-cases names in ARNs; these are.
SERVING_NAME_PREFIX = "llmt-"
# The only tag keys serving puts on what it creates (whose it is, for which deployment): AddTags allows no other.
SERVING_TAG_KEYS = ("llm-tuner:deployment", "llm-tuner:user")

# The resource types each SageMaker action is authorised on, as the Service Authorization Reference lists them
# ("Actions, resources, and condition keys for Amazon SageMaker AI"): every required one (CreateEndpoint needs
# the endpoint config as well as the endpoint, CreateInferenceComponent the endpoint as well as the component),
# and the Invoke actions' optional inference-component, which is what a call on an adapter names. An empty
# tuple: no resource-level permission at all (WILDCARD_REASONS says so).
SAGEMAKER_RESOURCE_TYPES: dict[str, tuple[str, ...]] = {
    "sagemaker:CreateTrainingJob": ("training-job",),
    "sagemaker:DescribeTrainingJob": ("training-job",),
    "sagemaker:StopTrainingJob": ("training-job",),
    "sagemaker:CreateModel": ("model",),
    "sagemaker:DescribeModel": ("model",),
    "sagemaker:DeleteModel": ("model",),
    "sagemaker:CreateEndpointConfig": ("endpoint-config",),
    "sagemaker:DescribeEndpointConfig": ("endpoint-config",),
    "sagemaker:DeleteEndpointConfig": ("endpoint-config",),
    "sagemaker:CreateEndpoint": ("endpoint", "endpoint-config"),
    "sagemaker:DescribeEndpoint": ("endpoint",),
    "sagemaker:DeleteEndpoint": ("endpoint",),
    "sagemaker:CreateInferenceComponent": ("endpoint", "inference-component"),
    "sagemaker:DescribeInferenceComponent": ("inference-component",),
    "sagemaker:DeleteInferenceComponent": ("inference-component",),
    "sagemaker:ListInferenceComponents": (),
    "sagemaker:InvokeEndpoint": ("endpoint", "inference-component"),
    "sagemaker:InvokeEndpointWithResponseStream": ("endpoint", "inference-component"),
}
# What each create action makes: the resources AddTags (tags passed on create) is then needed on.
SAGEMAKER_CREATES = {"sagemaker:CreateTrainingJob": "training-job", "sagemaker:CreateModel": "model",
                     "sagemaker:CreateEndpointConfig": "endpoint-config", "sagemaker:CreateEndpoint": "endpoint",
                     "sagemaker:CreateInferenceComponent": "inference-component"}
SAGEMAKER_NAME_PREFIXES = {"training-job": TRAINING_JOB_NAME_PREFIX, "model": SERVING_NAME_PREFIX,
                           "endpoint-config": SERVING_NAME_PREFIX, "endpoint": SERVING_NAME_PREFIX,
                           "inference-component": SERVING_NAME_PREFIX}
# Per service, the tag keys its AddTags may set (a service not listed: no such condition).
SAGEMAKER_TAG_KEYS = {"inference": SERVING_TAG_KEYS}


_DYNAMO_WRITE = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
_SQS_CONSUME = ("sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                "sqs:SendMessage")  # SendMessage: the consumer moves a poison message to the DLQ itself
# ListParts: a direct upload's parts, checked against what was declared before it completes.
_S3_FILES = ("s3:GetObject", "s3:HeadObject", "s3:PutObject", "s3:CreateMultipartUpload", "s3:UploadPart",
             "s3:CompleteMultipartUpload", "s3:AbortMultipartUpload", "s3:ListMultipartUploads", "s3:ListParts",
             "s3:ListObjectVersions", "s3:DeleteObjects")
_S3_TRAINING = ("s3:GetObject", "s3:HeadObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploads",
                "s3:ListObjectVersions", "s3:DeleteObjects")

# A GPU launch checks its training quota: found by name in the listings, then read (services/training/quotas.py).
_QUOTAS_READ = ("service-quotas:GetServiceQuota", "service-quotas:ListServiceQuotas",
                "service-quotas:ListAWSDefaultServiceQuotas")
# Serving (services/inference/endpoints.py): the worker and the reconciler create and delete deployments (a
# model, an endpoint config and an endpoint per stack, inference components on it); the API describes them and,
# with the worker (evaluations), invokes them.
_SERVING_DESCRIBE = ("sagemaker:DescribeEndpoint", "sagemaker:DescribeInferenceComponent")
_SERVING_CHANGE = ("sagemaker:CreateModel", "sagemaker:DeleteModel", "sagemaker:CreateEndpointConfig",
                   "sagemaker:DeleteEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:DeleteEndpoint",
                   "sagemaker:CreateInferenceComponent", "sagemaker:DeleteInferenceComponent")
_SERVING_INVOKE = ("sagemaker-runtime:InvokeEndpoint", "sagemaker-runtime:InvokeEndpointWithResponseStream")
CALLS: dict[str, frozenset[str]] = {
    # Hears auth's revocations (and other live events) on a queue of its own per replica (shared/replica.py).
    "gateway": frozenset({"sts:GetCallerIdentity", "sqs:CreateQueue", "sqs:GetQueueAttributes",
                          "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                          "sqs:ChangeMessageVisibility", "sns:Subscribe", "sns:Unsubscribe"}),
    # Scan: a gateway replica's catch-up on revoked sessions (SessionsStore.revoked_since).
    # BatchWriteItem: a deleted account's audit entries (AuditLog).
    "auth": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:Scan", "dynamodb:TransactWriteItems",
                       "dynamodb:BatchWriteItem", "sns:Publish", "sts:GetCallerIdentity"}),
    # Query: a user's files, through the user-files-index (FilesStore.list_for_user).
    "files": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:TransactWriteItems", *_S3_FILES, "sns:Publish",
                        "sts:GetCallerIdentity"}),
    "files-worker": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:TransactWriteItems",
                               *(a for a in _S3_FILES if a not in ("s3:HeadObject", "s3:ListParts")), "sns:Publish",
                               *_SQS_CONSUME, "sts:GetCallerIdentity"}),
    # TransactWriteItems: a job's final status and the release of its usage reservation, as one (JobsStore).
    "training": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:BatchWriteItem", "dynamodb:TransactWriteItems",
                           *_S3_TRAINING,
                           "s3:ListObjectsV2", "sns:Publish", "sqs:GetQueueUrl", "sqs:SendMessage",
                           "sagemaker:StopTrainingJob", *_QUOTAS_READ, "logs:DescribeLogStreams",
                           "logs:GetLogEvents", "sts:GetCallerIdentity"}),
    "training-worker": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:BatchWriteItem",
                                  "dynamodb:TransactWriteItems", *_S3_TRAINING,
                                  # a paused job's newest checkpoint, listed under its own prefix (pausing.py)
                                  "s3:ListObjectsV2",
                                  "sns:Publish", *_SQS_CONSUME, "sagemaker:CreateTrainingJob",
                                  "sagemaker:StopTrainingJob", *_QUOTAS_READ,
                                  # a job's last metrics steps, read when SageMaker says it ended
                                  "logs:DescribeLogStreams", "logs:FilterLogEvents", "sts:GetCallerIdentity"}),
    "training-reconciler": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:BatchWriteItem",
                                      "dynamodb:TransactWriteItems", *_S3_TRAINING,
                                      "s3:ListObjectsV2",  # as the worker: a paused job's newest checkpoint
                                      "sns:Publish", "sqs:GetQueueUrl", "sqs:SendMessage",
                                      "sagemaker:DescribeTrainingJob", *_QUOTAS_READ,
                                      "logs:DescribeLogStreams",
                                      "logs:FilterLogEvents", "sts:GetCallerIdentity"}),
    # Chat completions, deployments and evaluations asked for (the worker makes them), results read and deleted.
    "inference": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "sns:Publish", "sqs:GetQueueUrl", "sqs:SendMessage",
                            "s3:GetObject", "s3:DeleteObject", *_SERVING_DESCRIBE, *_SERVING_INVOKE,
                            "sts:GetCallerIdentity"}),
    # Deployments advanced, evaluations run (their results written), projections of jobs' models and files, a
    # deleted user's data (Scan: the files projection has no user index).
    "inference-worker": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "dynamodb:Scan", "sns:Publish", *_SQS_CONSUME,
                                   "s3:GetObject", "s3:PutObject", "s3:DeleteObject", *_SERVING_DESCRIBE,
                                   *_SERVING_CHANGE, *_SERVING_INVOKE, "sts:GetCallerIdentity"}),
    # Creating and deleting deployments advanced, idle ones taken down.
    "inference-reconciler": frozenset({*_DYNAMO_WRITE, "dynamodb:Query", "sns:Publish", "sqs:GetQueueUrl",
                                       "sqs:SendMessage", *_SERVING_DESCRIBE, *_SERVING_CHANGE,
                                       "sts:GetCallerIdentity"}),
}

_COMMANDS_UNUSED = "shared.envelope' CommandQueue: this service sends no commands"
_INBOX_UNUSED = "shared.inbox comes in with shared.worker's `dispatcher`; replica queues have no inbox"

_ADVANCE_NOT_IN_API = ("deployments.advance runs in the API only on demand (DEPLOY_ON_DEMAND: the local cluster's; "
                       "the stack leaves it off): on AWS the worker and the reconciler make and remove deployments")
_FILES_PROJECTION_CLEARED_BY_WORKER = "FilesStore.delete_of runs on user.deleted, in the worker"

# Operations a process's imports contain but the process never runs, and why: not granted.
NOT_CALLED: dict[str, dict[str, str]] = {
    "gateway": {**{op: _INBOX_UNUSED for op in _DYNAMO_WRITE},
                "sns:Publish": "shared.envelope' Publisher: the gateway publishes nothing",
                "sqs:SendMessage": "replica queues have no DLQ to move messages to, and the gateway sends no commands",
                "sqs:GetQueueUrl": "a replica creates its queue and keeps the URL CreateQueue answers"},
    "auth": {"sqs:GetQueueUrl": _COMMANDS_UNUSED, "sqs:SendMessage": _COMMANDS_UNUSED},
    "files": {"sqs:GetQueueUrl": _COMMANDS_UNUSED, "sqs:SendMessage": _COMMANDS_UNUSED},
    "inference": {**{op: _ADVANCE_NOT_IN_API for op in _SERVING_CHANGE},
                  "s3:PutObject": "evaluation results are written by the worker (evaluations.run_evaluation)",
                  "dynamodb:Scan": _FILES_PROJECTION_CLEARED_BY_WORKER},
    "inference-reconciler": {"dynamodb:Scan": _FILES_PROJECTION_CLEARED_BY_WORKER},
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
    "s3:ListParts": ("s3:ListMultipartUploadParts",),
    "s3:ListMultipartUploads": ("s3:ListBucketMultipartUploads",),
    "s3:DeleteObjects": ("s3:DeleteObject", "s3:DeleteObjectVersion"),  # deletes name each version
    # The request carries Tags and a RoleArn: both are authorised separately.
    "sagemaker:CreateTrainingJob": ("sagemaker:CreateTrainingJob", "sagemaker:AddTags", "iam:PassRole"),
    # Tags on create need sagemaker:AddTags (SageMaker AI developer guide, "Provide permissions for tagging
    # SageMaker AI resources"); a model's ExecutionRoleArn, and an endpoint config's (the role inference
    # components without a model of their own, the adapters, load their artifact as), need iam:PassRole.
    "sagemaker:CreateModel": ("sagemaker:CreateModel", "sagemaker:AddTags", "iam:PassRole"),
    "sagemaker:CreateEndpointConfig": ("sagemaker:CreateEndpointConfig", "sagemaker:AddTags", "iam:PassRole"),
    "sagemaker:CreateEndpoint": ("sagemaker:CreateEndpoint", "sagemaker:AddTags"),
    "sagemaker:CreateInferenceComponent": ("sagemaker:CreateInferenceComponent", "sagemaker:AddTags"),
    # The runtime's operations are authorised under the `sagemaker` prefix. The streaming one: its API reference
    # says it needs sagemaker:InvokeEndpoint, the Service Authorization Reference lists an action of its own;
    # both are granted, on the same resources.
    "sagemaker-runtime:InvokeEndpoint": ("sagemaker:InvokeEndpoint",),
    "sagemaker-runtime:InvokeEndpointWithResponseStream": ("sagemaker:InvokeEndpoint",
                                                           "sagemaker:InvokeEndpointWithResponseStream"),
    "service-quotas:GetServiceQuota": ("servicequotas:GetServiceQuota",),
    "service-quotas:ListServiceQuotas": ("servicequotas:ListServiceQuotas",),
    "service-quotas:ListAWSDefaultServiceQuotas": ("servicequotas:ListAWSDefaultServiceQuotas",),
    "sts:GetCallerIdentity": (),  # needs no permission: AWS answers it for any caller
    # The topics are encrypted with the messaging key (SSE-KMS): a publisher needs the key to make the message's
    # data key (SNS developer guide, "Encryption at rest": kms:GenerateDataKey* and kms:Decrypt).
    "sns:Publish": ("sns:Publish", "kms:GenerateDataKey", "kms:Decrypt"),
}

WILDCARD_REASONS = {
    "servicequotas:GetServiceQuota": "Service Quotas has no resource-level permission for reading a quota",
    "servicequotas:ListServiceQuotas": "Service Quotas has no resource-level permission for listing quotas",
    "servicequotas:ListAWSDefaultServiceQuotas": "Service Quotas has no resource-level permission for listing quotas",
    "ecr:GetAuthorizationToken": "an ECR login token is account-wide; pulls are then limited to our repositories",
    "cloudwatch:PutMetricData": "metrics have no ARN; limited by a cloudwatch:namespace condition instead",
    "sagemaker:ListInferenceComponents": "SageMaker has no resource-level permission for listing inference "
                                         "components",
}

_S3_BUCKET_LEVEL = {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads"}
_S3_PREFIX_LISTING = {"s3:ListBucket", "s3:ListBucketVersions"}  # s3:prefix applies to these
_S3_READ = {"s3:GetObject", "s3:GetObjectVersion"}
_SQS_QUEUE_MANAGEMENT = {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes"}
_SNS_SUBSCRIBING = {"sns:Subscribe", "sns:Unsubscribe"}


def iam_actions(operation: str) -> tuple[str, ...]:
    return IAM_ACTIONS.get(operation, (operation,))


def granted_actions(process: str) -> set[str]:
    return {action for op in CALLS[process] for action in iam_actions(op)}


class Refs:
    """How the template names the resources a policy points at (CloudFormation expressions)."""

    def __init__(self, *, table_arn: Callable[[str], Arn], queue_arn: Callable[[str], Arn],
                 topic_arn: Callable[[str], Arn], bucket_arn: Arn, sagemaker_role_arn: Arn, serving_role_arn: Arn,
                 messaging_key_arn: Arn, sub: Callable[[str], Arn]) -> None:
        self.table_arn = table_arn
        self.queue_arn = queue_arn
        self.topic_arn = topic_arn
        self.bucket_arn = bucket_arn
        self.sagemaker_role_arn = sagemaker_role_arn  # training jobs run as it
        self.serving_role_arn = serving_role_arn  # endpoints run as it
        self.messaging_key_arn = messaging_key_arn  # the KMS key the topics are encrypted with
        self.sub = sub  # Fn::Sub of a string with ${AWS::Region}, ${AWS::AccountId}, ${AWS::Partition}

    def passed_role(self, service: str) -> Arn:
        """The one role a service hands to SageMaker: training's to its jobs, inference's to its endpoints."""
        return {"training": self.sagemaker_role_arn, "inference": self.serving_role_arn}[service]

    def objects(self, prefix: str) -> Arn:
        """The objects under `prefix`: never the whole bucket."""
        if not prefix.strip("/"):
            raise ValueError("a bucket grant names a prefix")
        return objects_arn(self.bucket_arn, f"{prefix}*")

    def sagemaker_arn(self, resource_type: str) -> Arn:
        return self.sub(f"arn:${{AWS::Partition}}:sagemaker:${{AWS::Region}}:${{AWS::AccountId}}:{resource_type}/"
                        + SAGEMAKER_NAME_PREFIXES[resource_type] + "*")


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
    statements += _bucket_statements(process.name, of("s3"), refs)
    topics = [t for t in resources.topics if t.owner == service]
    if "sns:Publish" in actions:
        statements.append(_statement("PublishOwnTopic", ["sns:Publish"], [refs.topic_arn(t.name) for t in topics]))
    if of("kms"):
        statements.append(_statement("EncryptMessages", of("kms"), [refs.messaging_key_arn]))
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
    statements += _sagemaker_statements(of("sagemaker"), SAGEMAKER_TAG_KEYS.get(service), refs)
    if "iam:PassRole" in actions:
        statements.append(_statement("PassOnlyTheSageMakerRole", ["iam:PassRole"], [refs.passed_role(service)],
                                     {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}))
    if of("logs"):
        statements.append(_statement("ReadTrainingLogs", of("logs"), log_group_arns(resources, refs)))
    if of("servicequotas"):
        statements.append(_statement("ReadQuotas", of("servicequotas"), ["*"]))
    return {"Version": "2012-10-17", "Statement": statements}


def _bucket_statements(process: str, actions: set[str], refs: Refs) -> list[Json]:
    """Objects by prefix: all its actions on its own, GetObject on what it reads, PutObject where it writes.
    ListBucket and ListBucketVersions name their prefix (s3:prefix): only its own. ListBucketMultipartUploads has
    no s3:prefix condition key (Service Authorization Reference): it is on the bucket, and shows keys in flight,
    never their data."""
    if not actions:
        return []
    prefixes: BucketPrefixes = BUCKET_PREFIXES[process]  # a process that calls S3 must say where
    listing, objects = actions & _S3_BUCKET_LEVEL, actions - _S3_BUCKET_LEVEL
    statements = []
    if listing & _S3_PREFIX_LISTING:
        statements.append(_statement("BucketListing", listing & _S3_PREFIX_LISTING, [refs.bucket_arn],
                                     {"StringLike": {"s3:prefix": [p + "*" for p in prefixes.owns]}}))
    if listing - _S3_PREFIX_LISTING:
        statements.append(_statement("MultipartUploadListing", listing - _S3_PREFIX_LISTING, [refs.bucket_arn]))
    if objects & _S3_READ and prefixes.reads:
        statements.append(_statement("ReadOthersObjects", objects & _S3_READ,
                                     [refs.objects(p) for p in prefixes.reads]))
    if "s3:PutObject" in objects and prefixes.writes:
        statements.append(_statement("WriteToOthersPrefixes", ["s3:PutObject"],
                                     [refs.objects(p) for p in prefixes.writes]))
    if objects:
        statements.append(_statement("OwnObjects", objects, [refs.objects(p) for p in prefixes.owns]))
    return statements


def _sagemaker_statements(actions: set[str], tag_keys: tuple[str, ...] | None, refs: Refs) -> list[Json]:
    """One statement per set of resource types, each naming only resources with our name prefixes."""
    by_types: dict[tuple[str, ...], set[str]] = {}
    for action in actions - {"sagemaker:AddTags"}:
        by_types.setdefault(SAGEMAKER_RESOURCE_TYPES[action], set()).add(action)
    statements = []
    if "sagemaker:AddTags" in actions:  # tags passed on create: on what it creates, and only our tag keys
        created = tuple(sorted({SAGEMAKER_CREATES[a] for a in actions if a in SAGEMAKER_CREATES}))
        if tag_keys is None:
            by_types.setdefault(created, set()).add("sagemaker:AddTags")
        else:
            statements.append(_statement("TagOnCreateOnlyOurKeys", ["sagemaker:AddTags"],
                                         [refs.sagemaker_arn(t) for t in created],
                                         {"ForAllValues:StringEquals": {"aws:TagKeys": list(tag_keys)}}))
    for types, grouped in sorted(by_types.items()):
        if not types:
            statements.append(_statement("SageMakerListings", grouped, ["*"]))
        else:
            sid = "Own" + "And".join("".join(p.capitalize() for p in t.split("-")) + "s" for t in types)
            statements.append(_statement(sid, grouped, [refs.sagemaker_arn(t) for t in types]))
    return statements


def log_group_arns(resources: Resources, refs: Refs) -> list[Arn]:
    """The group and its streams (`...:log-group:NAME:log-stream:STREAM` matches `NAME:*`)."""
    return [refs.sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{group}{tail}")
            for group in resources.log_groups for tail in ("", ":*")]
