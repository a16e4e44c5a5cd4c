"""The CloudFormation template for a whole LLM Tuner deployment, built from `shared.contracts.resources`.

Tables, bucket, topics, queues, subscriptions, rules and log groups come from the one resource description the
local cluster provisions too, so an addition there reaches AWS without a second list to keep in step. Around
them: the SageMaker execution role (training jobs) and serving role (endpoints), one least-privilege task role
per process (`deploy.aws.iam`), each limited to its prefixes of the bucket (`deploy.aws.bucket_access`), the KMS key
the topics are encrypted with (`deploy.aws.messaging_key`), Secrets Manager secrets (the service token every task
gets), ECS Fargate services per process (`deploy.aws.processes`), a security group per process
(`deploy.aws.network`), an HTTPS load balancer in front of the gateway only, per-process scaling, and the
SageMaker cost alarm.

Each service's environment is derived from its Settings class: a setting whose default is a resource's local
name (`DYNAMODB_USERS_TABLE` defaults to `llm-tuner-users`) gets that resource's deployed name. So a new table
with its setting needs no change here.

`python -m deploy.aws.template [--out FILE] [--prefix NAME]` writes the JSON; deploy/aws/llm-tuner.template.json
is the committed output for the default prefix, and a unit test keeps it equal to what this module builds.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from deploy.aws import bucket_access, iam, images, messaging_key, network
from deploy.aws.processes import PROCESSES, SERVICES, Process, api_of
from shared.contracts import resources as res
from shared.contracts.resources import Queue, Resources, Table

Json = dict[str, Any]

TEMPLATE_FILE = Path(__file__).with_name("llm-tuner.template.json")
CONTAINER_USER = "10001"  # the image's non-root user (deploy/docker/service.Dockerfile)
HEALTHCHECK = ["CMD", "python", "/app/deploy/docker/healthcheck.py"]
# Read-only root file system: the only writable place is an ephemeral /tmp (multipart spooling, temp files).
TMP_VOLUME = "tmp"
# SageMaker writes training metrics to CloudWatch under this namespace, as the execution role.
SAGEMAKER_METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"
# ...and endpoints' instance and inference-component utilisation under these, as the serving role.
SERVING_METRICS_NAMESPACES = ["/aws/sagemaker/Endpoints", "/aws/sagemaker/InferenceComponents"]
# Each endpoint logs to a group of its own, `/aws/sagemaker/Endpoints/<endpoint name>`, which SageMaker creates.
SERVING_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints/"
# What endpoints load from the bucket: the copies of base models (services/training/catalog.json's
# artifact_prefix) and the adapters, each job's `training-jobs/{user}/{job}/output/model.tar.gz`.
BASE_MODELS_PREFIX = bucket_access.BASE_MODELS
ADAPTER_OBJECTS = f"{bucket_access.TRAINING_JOBS}*/output/model.tar.gz"
# Browsers PUT direct-upload parts to presigned URLs and read back each part's ETag (deploy/local/provision.py).
CORS_RULE = {"AllowedMethods": ["PUT"], "AllowedHeaders": ["*"], "ExposedHeaders": ["ETag"], "MaxAge": 3600}
SERVICE_TOKEN_SECRET = "ServiceTokenSecret"  # noqa: S105 (a logical id, not a secret)
SERVICE_TOKEN_LENGTH = 64  # letters and digits: about 380 bits
# Training jobs list only their own prefixes (a channel's S3Prefix, checkpoints).
SAGEMAKER_LISTING = {"StringLike": {"s3:prefix": [p + "*" for p in (*bucket_access.SAGEMAKER_JOB_READS,
                                                                    *bucket_access.SAGEMAKER_JOB_OWNS)]}}


def sagemaker_job_objects(bucket_arn: Json) -> tuple[list[Json], list[Json]]:
    """What training jobs read, and their own objects (output, checkpoints), as object ARNs by prefix."""
    def objects(prefixes: tuple[str, ...]) -> list[Json]:
        return [{"Fn::Join": ["", [bucket_arn, f"/{p}*"]]} for p in prefixes]

    return objects(bucket_access.SAGEMAKER_JOB_READS), objects(bucket_access.SAGEMAKER_JOB_OWNS)


def sub(text: str) -> Any:
    """Fn::Sub where the text has variables, the text itself where it has none."""
    return {"Fn::Sub": text} if "${" in text else text


def ref(name: str) -> Json:
    return {"Ref": name}


def get_att(logical_id: str, attribute: str) -> Json:
    return {"Fn::GetAtt": [logical_id, attribute]}


def camel(name: str) -> str:
    """A logical id from a resource's local name: `llm-tuner-files-worker` -> `FilesWorker`."""
    name = name.removeprefix(res.PREFIX).strip("-/")
    return "".join(part[:1].upper() + part[1:] for part in name.replace("/", "-").split("-") if part)


def renamed(resources: Resources, prefix: str) -> Resources:
    """The description with `llm-tuner` in every name replaced by `prefix`: a second deployment in one account
    (staging), or a test stack beside the tables other tests provision, gets names of its own."""
    def name(value: str) -> str:
        return prefix + value.removeprefix(res.PREFIX) if value.startswith(res.PREFIX) else value

    return replace(
        resources,
        tables=tuple(replace(t, name=name(t.name)) for t in resources.tables),
        topics=tuple(replace(t, name=name(t.name)) for t in resources.topics),
        queues=tuple(replace(q, name=name(q.name)) for q in resources.queues),
        subscriptions=tuple(replace(s, topic=name(s.topic), queue=name(s.queue)) for s in resources.subscriptions),
        rules=tuple(replace(r, name=name(r.name), queue=name(r.queue)) for r in resources.rules),
        replica_subscriptions=tuple(replace(r, topic=name(r.topic), queue_prefix=name(r.queue_prefix))
                                    for r in resources.replica_subscriptions),
    )


class _Builder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.local = res.describe()
        self.res = renamed(self.local, prefix)
        self.resources: Json = {}
        self.conditions: Json = {}
        self.parameters: Json = {}
        self.outputs: Json = {}
        # Local name -> logical id, per kind (a table and a topic may share a name: training-events).
        self.table_ids: dict[str, str] = {}
        self.topic_ids: dict[str, str] = {}
        self.queue_ids: dict[str, str] = {}

    def add(self, logical_id: str, type_: str, properties: Json, **extra: Any) -> str:
        if logical_id in self.resources:
            raise ValueError(f"two resources would have the logical id {logical_id}")
        self.resources[logical_id] = {"Type": type_, **extra, "Properties": properties}
        return logical_id

    def tags(self, **more: str) -> list[Json]:
        return [{"Key": "llm-tuner:stack", "Value": self.prefix}, *({"Key": k, "Value": v} for k, v in more.items())]

    # ---- data: from shared.contracts.resources -----------------------------------------------------------------------

    def table(self, table: Table, local: Table) -> None:
        keys = {table.hash_key, *([table.range_key] if table.range_key else [])}
        for index in table.indexes:
            keys |= {index.hash_key, *([index.range_key] if index.range_key else [])}

        def schema(hash_key: res.Key, range_key: res.Key | None) -> list[Json]:
            return [{"AttributeName": hash_key.name, "KeyType": "HASH"},
                    *([{"AttributeName": range_key.name, "KeyType": "RANGE"}] if range_key else [])]

        properties: Json = {
            "TableName": table.name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": k.name, "AttributeType": k.type}
                                     for k in sorted(keys, key=lambda k: k.name)],
            "KeySchema": schema(table.hash_key, table.range_key),
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
            "Tags": self.tags(**{"llm-tuner:owner": table.owner}),
        }
        if table.indexes:
            properties["GlobalSecondaryIndexes"] = [
                {"IndexName": i.name, "KeySchema": schema(i.hash_key, i.range_key),
                 "Projection": {"ProjectionType": "ALL"}} for i in table.indexes]
        if table.ttl_attribute:
            properties["TimeToLiveSpecification"] = {"AttributeName": table.ttl_attribute, "Enabled": True}
        # Deleting a table with point-in-time recovery on leaves a system backup for 35 days; a retained table
        # would make the next deployment of the same names fail.
        self.table_ids[local.name] = self.add(camel(local.name) + "Table", "AWS::DynamoDB::Table", properties,
                                        DeletionPolicy="Delete", UpdateReplacePolicy="Delete")

    def bucket(self) -> None:
        b = self.res.bucket
        lifecycle = [
            {"Id": "abort-incomplete-multipart-uploads", "Status": "Enabled",
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": b.abort_incomplete_uploads_days}},
            # Deletes and overwrites keep the old version (versioning): gone for good after this many days.
            {"Id": "expire-noncurrent-versions", "Status": "Enabled",
             "NoncurrentVersionExpiration": {"NoncurrentDays": ref("NoncurrentVersionDays")},
             "ExpiredObjectDeleteMarker": True},
            # Finished jobs' artifacts (adapters, merged models, checkpoints) are read rarely after the first
            # days: Intelligent-Tiering moves what nobody reads to cheaper tiers, and back on access.
            {"Id": "finished-job-artifacts", "Status": "Enabled", "Prefix": "training-jobs/",
             "Transitions": [{"StorageClass": "INTELLIGENT_TIERING",
                              "TransitionInDays": ref("ArtifactsTieringDays")}]},
        ]
        properties: Json = {
            "BucketName": sub(f"{self.prefix}-${{AWS::AccountId}}-${{AWS::Region}}"),
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                {"ServerSideEncryptionByDefault": {"SSEAlgorithm": b.encryption}, "BucketKeyEnabled": True}]},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                               "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "LifecycleConfiguration": {"Rules": lifecycle},
            # The local origins of the description become the deployment's one origin: the public domain.
            "CorsConfiguration": {"CorsRules": [{**CORS_RULE, "AllowedOrigins": [sub("https://${DomainName}")]}]},
            "Tags": self.tags(),
        }
        if b.versioning:
            properties["VersioningConfiguration"] = {"Status": "Enabled"}
        # Users' data, with every version: never deleted with the stack (`make teardown` says how to empty it).
        self.add("Bucket", "AWS::S3::Bucket", properties, DeletionPolicy="Retain", UpdateReplacePolicy="Retain")
        bucket_arn, objects_arn = get_att("Bucket", "Arn"), {"Fn::Join": ["", [get_att("Bucket", "Arn"), "/*"]]}
        role = {"AWS": get_att("SageMakerExecutionRole", "Arn")}
        reads, owns = sagemaker_job_objects(bucket_arn)
        self.add("BucketPolicy", "AWS::S3::BucketPolicy", {"Bucket": ref("Bucket"), "PolicyDocument": {
            "Version": "2012-10-17", "Statement": [
                {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                 "Resource": [bucket_arn, objects_arn], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
                # The setup guide's SageMaker access. SageMaker reaches S3 as the execution role it assumes, so
                # the grant names that role rather than the sagemaker.amazonaws.com service at large.
                # Its prefixes only, as in its own policy: a bucket policy grant alone would be enough.
                {"Sid": "AllowSageMakerList", "Effect": "Allow", "Principal": role,
                 "Action": "s3:ListBucket", "Resource": bucket_arn, "Condition": SAGEMAKER_LISTING},
                {"Sid": "AllowSageMakerLocation", "Effect": "Allow", "Principal": role,
                 "Action": "s3:GetBucketLocation", "Resource": bucket_arn},
                {"Sid": "AllowSageMakerReads", "Effect": "Allow", "Principal": role,
                 "Action": "s3:GetObject", "Resource": reads},
                {"Sid": "AllowSageMakerObjects", "Effect": "Allow", "Principal": role,
                 "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": owns},
            ]}})

    def messaging(self) -> None:
        messaging_key.add_key(self.add, self.prefix)
        for topic, local in zip(self.res.topics, self.local.topics, strict=True):
            properties = {"TopicName": topic.name, "Tags": self.tags(**{"llm-tuner:owner": topic.owner})}
            self.topic_ids[local.name] = self.add(camel(local.name) + "Topic", "AWS::SNS::Topic",
                                                  messaging_key.encrypted(properties))
        # People hear auth's security alerts by email (SecurityAlertEmail), or subscribe to the topic's output ARN.
        self.add("SecurityAlertEmailSubscription", "AWS::SNS::Subscription", {
            "TopicArn": ref(self.topic_ids[res.SECURITY_TOPIC]), "Protocol": "email",
            "Endpoint": ref("SecurityAlertEmail")}, Condition="HasSecurityAlertEmail")
        for queue, local_queue in zip(self.res.queues, self.local.queues, strict=True):
            self.queue(queue, local_queue)
        sources: dict[str, list[Json]] = {q.name: [] for q in self.local.queues}
        for sub_, local_sub in zip(self.res.subscriptions, self.local.subscriptions, strict=True):
            topic_id, queue_id = self.topic_ids[local_sub.topic], self.queue_ids[local_sub.queue]
            sources[local_sub.queue].append(ref(topic_id))
            self.add(f"{topic_id}To{queue_id}", "AWS::SNS::Subscription", {
                "TopicArn": ref(topic_id), "Protocol": "sqs", "Endpoint": get_att(queue_id, "Arn"),
                "FilterPolicyScope": "MessageAttributes", "FilterPolicy": {"type": list(sub_.event_types)},
                "RawMessageDelivery": sub_.raw_delivery})
        for rule, local_rule in zip(self.res.rules, self.local.rules, strict=True):
            queue_id = self.queue_ids[local_rule.queue]
            rule_id = self.add(camel(local_rule.name) + "Rule", "AWS::Events::Rule", {
                "Name": rule.name, "Description": rule.description, "EventPattern": rule.pattern,
                "State": "ENABLED", "Targets": [{"Id": queue_id, "Arn": get_att(queue_id, "Arn")}]})
            sources[local_rule.queue].append(get_att(rule_id, "Arn"))
        for local_name, arns in sources.items():
            if arns:
                queue_id = self.queue_ids[local_name]
                self.add(queue_id + "Policy", "AWS::SQS::QueuePolicy", {"Queues": [ref(queue_id)], "PolicyDocument": {
                    "Version": "2012-10-17", "Statement": [{
                        "Sid": "OwnTopicsAndRules", "Effect": "Allow",
                        "Principal": {"Service": ["sns.amazonaws.com", "events.amazonaws.com"]},
                        "Action": "sqs:SendMessage", "Resource": get_att(queue_id, "Arn"),
                        "Condition": {"ArnEquals": {"aws:SourceArn": arns}}}]}})

    def queue(self, queue: Queue, local: Queue) -> None:
        queue_id = camel(local.name) + "Queue"
        dlq_id = self.add(camel(local.name) + "DeadLetterQueue", "AWS::SQS::Queue", {
            "QueueName": queue.dlq_name, "MessageRetentionPeriod": queue.dlq_retention_s,
            "SqsManagedSseEnabled": True, "Tags": self.tags(**{"llm-tuner:owner": queue.owner})})
        self.queue_ids[local.name] = self.add(queue_id, "AWS::SQS::Queue", {
            "QueueName": queue.name, "VisibilityTimeout": queue.visibility_timeout_s,
            "MessageRetentionPeriod": queue.retention_s, "SqsManagedSseEnabled": True,
            "RedrivePolicy": {"deadLetterTargetArn": get_att(dlq_id, "Arn"), "maxReceiveCount": queue.max_receives},
            "Tags": self.tags(**{"llm-tuner:owner": queue.owner})})
        self.queue_ids[local.dlq_name] = dlq_id
        # A message in a DLQ is a message nobody handled: somebody should look.
        self.add(dlq_id + "Alarm", "AWS::CloudWatch::Alarm", {
            "AlarmDescription": f"Messages in {queue.dlq_name}: handling them failed {queue.max_receives} times",
            "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": get_att(dlq_id, "QueueName")}],
            "Statistic": "Maximum", "Period": 300, "EvaluationPeriods": 1, "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": [ref("AlarmTopic")]})

    def log_groups(self) -> None:
        """SageMaker creates its own log group on an account's first training job; an account that has run
        one already has it, and creating it again would fail the stack, so each group is a parameter."""
        for group in self.res.log_groups:
            logical_id, parameter = camel(group) + "LogGroup", log_group_parameter(group)
            self.parameters[parameter] = {
                "Type": "String", "AllowedValues": ["true", "false"], "Default": "true",
                "Description": f"Create {group} (false where the account has it already; make deploy checks)"}
            self.conditions[parameter] = {"Fn::Equals": [ref(parameter), "true"]}
            self.add(logical_id, "AWS::Logs::LogGroup", {"LogGroupName": group, "RetentionInDays": 90},
                     Condition=parameter, DeletionPolicy="Retain", UpdateReplacePolicy="Retain")

    # ---- roles ---------------------------------------------------------------------------------------------

    def refs(self) -> iam.Refs:
        return iam.Refs(
            table_arn=lambda name: get_att(self.table_ids[self._local_name(name)], "Arn"),
            queue_arn=lambda name: get_att(self.queue_ids[self._local_name(name)], "Arn"),
            topic_arn=lambda name: ref(self.topic_ids[self._local_name(name)]),
            bucket_arn=get_att("Bucket", "Arn"), sagemaker_role_arn=get_att("SageMakerExecutionRole", "Arn"),
            serving_role_arn=get_att("SageMakerServingRole", "Arn"),
            messaging_key_arn=get_att(messaging_key.LOGICAL_ID, "Arn"), sub=sub)

    def _local_name(self, name: str) -> str:
        return res.PREFIX + name.removeprefix(self.prefix) if name.startswith(self.prefix) else name

    def repository_arn(self, image: str) -> Json:
        return sub(f"arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:${{AWS::AccountId}}:repository/{self.prefix}/{image}")

    def image_uri(self, image: str) -> Json:
        registry = "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}"
        return sub(f"{registry}/{self.prefix}/{image}:${{ImageTag}}")

    def sagemaker_role(self) -> None:
        bucket_arn = get_att("Bucket", "Arn")
        reads, owns = sagemaker_job_objects(bucket_arn)
        statements: list[Json] = [
            {"Sid": "BucketListing", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": SAGEMAKER_LISTING},
            {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": bucket_arn},
            # Its input channels: the normalised examples of its files, a base model's copy (deploy.aws.bucket_access).
            {"Sid": "BucketInputs", "Effect": "Allow", "Action": "s3:GetObject", "Resource": reads},
            # Output, checkpoints (read back when a spot job resumes) and the merged model, under training-jobs/.
            {"Sid": "BucketOutputs", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": owns},
            {"Sid": "TrainingLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
             "Resource": iam.log_group_arns(self.res, self.refs())},
            {"Sid": "TrainingMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": SAGEMAKER_METRICS_NAMESPACE}}},
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PullTrainerImage", "Effect": "Allow",
             "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
             "Resource": self.repository_arn("trainer")},
            # The trainer reads the Hugging Face token itself, for gated models (HF_TOKEN_SECRET_ID).
            {"Fn::If": ["HasHuggingFaceToken", {
                "Sid": "HuggingFaceToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                "Resource": ref("HuggingFaceTokenSecret")}, ref("AWS::NoValue")]},
        ]
        self.add("SageMakerExecutionRole", "AWS::IAM::Role", {
            "Description": "Assumed by SageMaker training jobs: the bucket, training logs and the trainer image",
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]},
            "Policies": [{"PolicyName": "training-job", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": statements}}],
            "Tags": self.tags()})

    def serving_role(self) -> None:
        """What SageMaker endpoints run as: they read base models and adapters from the bucket (nothing else
        there, and write nothing), pull the serving image and write their own logs and metrics."""
        bucket_arn = get_att("Bucket", "Arn")
        log_groups = sub(f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:"
                         f"{SERVING_LOG_GROUP_PREFIX}{iam.SERVING_NAME_PREFIX}*")
        statements: list[Json] = [
            # LMI copies a base model's whole prefix (HF_MODEL_ID=s3://...): it lists it first.
            {"Sid": "BaseModelListing", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [BASE_MODELS_PREFIX + "*"]}}},
            {"Sid": "BucketLocation", "Effect": "Allow", "Action": "s3:GetBucketLocation", "Resource": bucket_arn},
            {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": [{"Fn::Join": ["", [bucket_arn, f"/{BASE_MODELS_PREFIX}*"]]},
                          {"Fn::Join": ["", [bucket_arn, f"/{ADAPTER_OBJECTS}"]]}]},
            {"Sid": "EndpointLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
             "Resource": [log_groups, {"Fn::Join": ["", [log_groups, ":log-stream:*"]]}]},
            {"Sid": "EndpointMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": SERVING_METRICS_NAMESPACES}}},
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PullServingImage", "Effect": "Allow",
             "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
             "Resource": {"Fn::If": ["HasServingImageRepositoryArn", ref("ServingImageRepositoryArn"),
                                     self.lmi_repository_arn()]}},
            {"Fn::If": ["HasHuggingFaceToken", {
                "Sid": "HuggingFaceToken", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                "Resource": ref("HuggingFaceTokenSecret")}, ref("AWS::NoValue")]},
        ]
        self.add("SageMakerServingRole", "AWS::IAM::Role", {
            "Description": "Assumed by SageMaker endpoints: base models and adapters in the bucket, their logs, "
                           "the serving image",
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]},
            "Policies": [{"PolicyName": "serving", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": statements}}],
            "Tags": self.tags()})

    def serving_image_uri(self) -> Json:
        """SERVING_IMAGE_URI: the ServingImageUri parameter, else AWS's LMI image in the stack's region."""
        lmi = images.lmi_image()
        default = sub(f"{lmi.account}.dkr.ecr.${{AWS::Region}}.${{AWS::URLSuffix}}/{lmi.repository}{lmi.reference}")
        return {"Fn::If": ["HasServingImageUri", ref("ServingImageUri"), default]}

    def lmi_repository_arn(self) -> Json:
        lmi = images.lmi_image()
        return sub(f"arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:{lmi.account}:repository/{lmi.repository}")

    def task_role(self, process: Process) -> str:
        return self.add(process.logical_id + "TaskRole", "AWS::IAM::Role", {
            "Description": f"{process.name}: only what its code calls, on its own service's resources",
            "AssumeRolePolicyDocument": _ecs_trust(),
            "Policies": [{"PolicyName": "least-privilege",
                          "PolicyDocument": iam.task_policy(process, self.res, self.refs())}],
            "Tags": self.tags(**{"llm-tuner:process": process.name})})

    def execution_role(self) -> None:
        """What ECS itself needs to start a task: pull our images, write its logs, read its secrets."""
        self.add("TaskExecutionRole", "AWS::IAM::Role", {
            "AssumeRolePolicyDocument": _ecs_trust(),
            "Policies": [{"PolicyName": "start-tasks", "PolicyDocument": {"Version": "2012-10-17", "Statement": [
                {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                {"Sid": "PullServiceImages", "Effect": "Allow",
                 "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                 "Resource": [self.repository_arn(s) for s in SERVICES]},
                {"Sid": "ContainerLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": [get_att(p.logical_id + "LogGroup", "Arn") for p in PROCESSES]},
                {"Sid": "ContainerSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                 "Resource": [ref("JwtSigningKeySecret"), ref(SERVICE_TOKEN_SECRET),
                              {"Fn::If": ["HasGoogle", ref("GoogleClientSecret"), ref("AWS::NoValue")]}]},
            ]}}],
            "Tags": self.tags()})

    # ---- secrets -------------------------------------------------------------------------------------------

    def secrets(self) -> None:
        """Values come in as NoEcho parameters that `make deploy` fills: a signing key it generates on the first
        deployment (and keeps on updates), and what the operator gives for Google and Hugging Face. The service
        token is generated by Secrets Manager itself. None of them is ever in the template."""
        # SERVICE_TOKEN: what one service shows another on its /internal/* routes (header X-Service-Token).
        self.add(SERVICE_TOKEN_SECRET, "AWS::SecretsManager::Secret", {
            "Description": "SERVICE_TOKEN: the credential services present to each other's /internal/* routes",
            "GenerateSecretString": {"PasswordLength": SERVICE_TOKEN_LENGTH, "ExcludePunctuation": True},
            "Tags": self.tags()})
        self.add("JwtSigningKeySecret", "AWS::SecretsManager::Secret", {
            "Description": "JWT_PRIVATE_KEY: the RSA key (PEM) auth signs access tokens with",
            "SecretString": ref("JwtPrivateKeyPem"), "Tags": self.tags()})
        self.add("GoogleClientSecret", "AWS::SecretsManager::Secret", {
            "Description": "GOOGLE_CLIENT_SECRET: the Google OAuth client's secret",
            "SecretString": ref("GoogleClientSecretValue"), "Tags": self.tags()}, Condition="HasGoogle",
            # cfn-lint checks the parameter's empty default, but the secret exists only when both are set.
            Metadata={"cfn-lint": {"config": {"ignore_checks": ["W1030"]}}})
        self.add("HuggingFaceTokenSecret", "AWS::SecretsManager::Secret", {
            "Description": "HF_TOKEN_SECRET_ID: the Hugging Face token training jobs and endpoints read for gated "
                           "models",
            "SecretString": ref("HuggingFaceToken"), "Tags": self.tags()}, Condition="HasHuggingFaceToken")

    # ---- containers ----------------------------------------------------------------------------------------

    def internal_url(self, service: str) -> Json:
        api = api_of(service)
        return sub(f"http://{api.name}.{self.prefix}.internal:{api.port}")

    def environment(self, process: Process) -> list[Json]:
        env: dict[str, Any] = {
            "ENVIRONMENT": "production", "AWS_DEFAULT_REGION": ref("AWS::Region"),
            "AUTH_JWKS_URL": sub(f"http://auth.{self.prefix}.internal:{api_of('auth').port}/.well-known/jwks.json"),
        }
        env.update(self.settings_environment(process.service))
        if process.kind == "api":
            env.update(HOST="0.0.0.0", PORT=str(process.port))  # every interface of the task's own network
        if process.service == "auth":
            env.update(BASE_URL=sub("https://${DomainName}"),
                       # The gateway (and the load balancer before it) forward the client's address.
                       TRUSTED_PROXIES=sub('["${VpcCidr}"]'),
                       GOOGLE_CLIENT_ID={"Fn::If": ["HasGoogle", ref("GoogleClientId"), ref("AWS::NoValue")]})
        if process.service == "training":
            env.update(SAGEMAKER_EXECUTION_ROLE_ARN=get_att("SageMakerExecutionRole", "Arn"),
                       TRAINER_IMAGE_URI=self.image_uri("trainer"), LAUNCH_MODE="image",
                       HF_TOKEN_SECRET_ID={"Fn::If": ["HasHuggingFaceToken", ref("HuggingFaceTokenSecret"),
                                                      ref("AWS::NoValue")]})
        if process.service == "inference":
            env.update(SERVING_EXECUTION_ROLE_ARN=get_att("SageMakerServingRole", "Arn"),
                       SERVING_IMAGE_URI=self.serving_image_uri(),
                       HF_TOKEN_SECRET_ID={"Fn::If": ["HasHuggingFaceToken", ref("HuggingFaceTokenSecret"),
                                                      ref("AWS::NoValue")]})
        # The APIs it calls, where its settings name them by service (the gateway's AUTH_URL, FILES_URL, ...,
        # training's FILES_URL); what its security group lets it reach (deploy.aws.network).
        names = _settings_names(process.service)
        env.update({f"{s.upper()}_URL": self.internal_url(s) for s in process.calls if f"{s.upper()}_URL" in names})
        entries = [{"Name": k, "Value": v} for k, v in sorted(env.items())]

        def optional(value: Any) -> bool:
            return isinstance(value, dict) and "Fn::If" in value and value["Fn::If"][2] == ref("AWS::NoValue")

        # An optional setting that is off is left out, rather than set to an empty string.
        return [e if not optional(e["Value"]) else
                {"Fn::If": [e["Value"]["Fn::If"][0], {"Name": e["Name"], "Value": e["Value"]["Fn::If"][1]},
                            ref("AWS::NoValue")]} for e in entries]

    def settings_environment(self, service: str) -> dict[str, Any]:
        """Every setting of the service whose default names a resource, set to that resource's deployed name."""
        settings = importlib.import_module(f"services.{service}.settings").Settings
        deployed: dict[str, Any] = {
            **{local.name: deployed.name for local, deployed in zip(self.local.tables, self.res.tables, strict=True)},
            **{local.name: deployed.name for local, deployed in zip(self.local.topics, self.res.topics, strict=True)},
            **{name: deployed for local, q in zip(self.local.queues, self.res.queues, strict=True)
               for name, deployed in ((local.name, q.name), (local.dlq_name, q.dlq_name))},
            **{local.queue_prefix: r.queue_prefix for local, r in
               zip(self.local.replica_subscriptions, self.res.replica_subscriptions, strict=True)},
            **{group: group for group in self.res.log_groups},
            self.local.bucket.name: ref("Bucket"),
        }
        env: dict[str, Any] = {}
        for name, field in settings.model_fields.items():
            if isinstance(field.default, str) and field.default in deployed:
                env[(field.alias or name).upper()] = deployed[field.default]
        return env

    def secrets_of(self, process: Process) -> list[Json]:
        every = [{"Name": "SERVICE_TOKEN", "ValueFrom": ref(SERVICE_TOKEN_SECRET)}]
        if process.service != "auth":
            return every
        return [*every, {"Name": "JWT_PRIVATE_KEY", "ValueFrom": ref("JwtSigningKeySecret")},
                {"Fn::If": ["HasGoogle", {"Name": "GOOGLE_CLIENT_SECRET", "ValueFrom": ref("GoogleClientSecret")},
                            ref("AWS::NoValue")]}]

    def process(self, process: Process) -> None:
        pid = process.logical_id
        self.add(pid + "LogGroup", "AWS::Logs::LogGroup", {
            "LogGroupName": f"/ecs/{self.prefix}/{process.name}", "RetentionInDays": 30},
            DeletionPolicy="Delete", UpdateReplacePolicy="Delete")
        role = self.task_role(process)
        container: Json = {
            "Name": process.name, "Image": self.image_uri(process.service), "Essential": True,
            "Command": ["python", "-m", process.module], "User": CONTAINER_USER,
            "ReadonlyRootFilesystem": True,
            "MountPoints": [{"SourceVolume": TMP_VOLUME, "ContainerPath": "/tmp"}],  # noqa: S108
            "Environment": self.environment(process), "Secrets": self.secrets_of(process),
            "HealthCheck": {"Command": HEALTHCHECK, "Interval": 30, "Timeout": 5, "Retries": 3, "StartPeriod": 60},
            # A worker finishes the message in hand after SIGTERM (the consumer loop); Fargate allows 120 s.
            "StopTimeout": 120,
            "LinuxParameters": {"InitProcessEnabled": True},
            "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                "awslogs-group": ref(pid + "LogGroup"), "awslogs-region": ref("AWS::Region"),
                "awslogs-stream-prefix": process.name}},
        }
        if process.port:
            container["PortMappings"] = [{"ContainerPort": process.port, "Protocol": "tcp"}]
        self.add(pid + "TaskDefinition", "AWS::ECS::TaskDefinition", {
            "Family": f"{self.prefix}-{process.name}", "Cpu": str(process.cpu), "Memory": str(process.memory_mib),
            "NetworkMode": "awsvpc", "RequiresCompatibilities": ["FARGATE"],
            "RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"},
            "ExecutionRoleArn": get_att("TaskExecutionRole", "Arn"), "TaskRoleArn": get_att(role, "Arn"),
            "Volumes": [{"Name": TMP_VOLUME}], "ContainerDefinitions": [container], "Tags": self.tags()})
        service: Json = {
            "ServiceName": f"{self.prefix}-{process.name}", "Cluster": ref("Cluster"),
            "TaskDefinition": ref(pid + "TaskDefinition"), "LaunchType": "FARGATE",
            "DesiredCount": process.min_tasks,
            "DeploymentConfiguration": {
                "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                # One reconciler at a time; everything else keeps its capacity during a deployment.
                **({"MinimumHealthyPercent": 0, "MaximumPercent": 100} if process.kind == "singleton" else
                   {"MinimumHealthyPercent": 100, "MaximumPercent": 200})},
            "NetworkConfiguration": {"AwsvpcConfiguration": {
                "Subnets": ref("PrivateSubnetIds"), "SecurityGroups": [ref(network.group_of(process))],
                "AssignPublicIp": "DISABLED"}},
            "PropagateTags": "SERVICE", "Tags": self.tags(**{"llm-tuner:process": process.name}),
        }
        extra: Json = {}
        if process.public:
            service["LoadBalancers"] = [{"ContainerName": process.name, "ContainerPort": process.port,
                                         "TargetGroupArn": ref("GatewayTargetGroup")}]
            service["HealthCheckGracePeriodSeconds"] = 60
            extra["DependsOn"] = ["HttpsListener"]
        elif process.kind == "api":
            discovery = self.add(pid + "Discovery", "AWS::ServiceDiscovery::Service", {
                "Name": process.name, "NamespaceId": get_att("Namespace", "Id"),
                "DnsConfig": {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 10}]},
                "HealthCheckCustomConfig": {"FailureThreshold": 1}})
            service["ServiceRegistries"] = [{"RegistryArn": get_att(discovery, "Arn")}]
        self.add(pid + "Service", "AWS::ECS::Service", service, **extra)
        if process.kind != "singleton":
            self.scaling(process)

    def scaling(self, process: Process) -> None:
        pid = process.logical_id
        target = self.add(pid + "ScalableTarget", "AWS::ApplicationAutoScaling::ScalableTarget", {
            "ServiceNamespace": "ecs", "ScalableDimension": "ecs:service:DesiredCount",
            "ResourceId": {"Fn::Join": ["/", ["service", ref("Cluster"), get_att(pid + "Service", "Name")]]},
            "MinCapacity": process.min_tasks, "MaxCapacity": process.max_tasks})
        if process.kind == "api":
            self.add(pid + "CpuScaling", "AWS::ApplicationAutoScaling::ScalingPolicy", {
                "PolicyName": f"{self.prefix}-{process.name}-cpu", "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": ref(target), "TargetTrackingScalingPolicyConfiguration": {
                    "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
                    "TargetValue": 60, "ScaleOutCooldown": 60, "ScaleInCooldown": 300}})
            return
        queue = next(q for q in self.res.queues if q.owner == process.service)
        queue_name = get_att(self.queue_ids[self._local_name(queue.name)], "QueueName")
        # Out: a backlog of visible messages adds workers, more of them for a bigger backlog.
        self.add(pid + "ScaleOut", "AWS::ApplicationAutoScaling::ScalingPolicy", {
            "PolicyName": f"{self.prefix}-{process.name}-backlog-out", "PolicyType": "StepScaling",
            "ScalingTargetId": ref(target), "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ChangeInCapacity", "Cooldown": 60, "MetricAggregationType": "Maximum",
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 100,
                                     "ScalingAdjustment": 1},
                                    {"MetricIntervalLowerBound": 100, "ScalingAdjustment": 3}]}})
        self.add(pid + "BacklogAlarm", "AWS::CloudWatch::Alarm", {
            "AlarmDescription": f"{process.name}: messages waiting in its queue",
            "Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [{"Name": "QueueName", "Value": queue_name}], "Statistic": "Maximum", "Period": 60,
            "EvaluationPeriods": 2, "Threshold": 10, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [ref(pid + "ScaleOut")]})
        # In: one worker fewer once nothing has waited or been in flight for 15 minutes, so a scale-in never
        # interrupts work in hand (which would only be redelivered, but late).
        self.add(pid + "ScaleIn", "AWS::ApplicationAutoScaling::ScalingPolicy", {
            "PolicyName": f"{self.prefix}-{process.name}-idle-in", "PolicyType": "StepScaling",
            "ScalingTargetId": ref(target), "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ChangeInCapacity", "Cooldown": 300, "MetricAggregationType": "Maximum",
                "StepAdjustments": [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1}]}})

        def metric(metric_id: str, name: str) -> Json:
            dimensions = [{"Name": "QueueName", "Value": queue_name}]
            return {"Id": metric_id, "ReturnData": False, "MetricStat": {"Stat": "Maximum", "Period": 300, "Metric": {
                "Namespace": "AWS/SQS", "MetricName": name, "Dimensions": dimensions}}}

        self.add(pid + "IdleAlarm", "AWS::CloudWatch::Alarm", {
            "AlarmDescription": f"{process.name}: nothing waiting or in flight",
            "Metrics": [metric("visible", "ApproximateNumberOfMessagesVisible"),
                        metric("inflight", "ApproximateNumberOfMessagesNotVisible"),
                        {"Id": "work", "Expression": "visible + inflight", "Label": "messages", "ReturnData": True}],
            "EvaluationPeriods": 3, "Threshold": 0, "ComparisonOperator": "LessThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [ref(pid + "ScaleIn")]})

    # ---- network -------------------------------------------------------------------------------------------

    def network(self) -> None:
        self.add("Cluster", "AWS::ECS::Cluster", {
            "ClusterName": self.prefix, "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
            "Tags": self.tags()})
        self.add("Namespace", "AWS::ServiceDiscovery::PrivateDnsNamespace", {
            "Name": f"{self.prefix}.internal", "Vpc": ref("VpcId"),
            "Description": "The services' private addresses: <api>.<prefix>.internal"})
        network.security_groups(self.add, self.tags())
        gateway = next(p for p in PROCESSES if p.public)
        self.add("LoadBalancer", "AWS::ElasticLoadBalancingV2::LoadBalancer", {
            "Name": f"{self.prefix}"[:32], "Type": "application", "Scheme": "internet-facing",
            "Subnets": ref("PublicSubnetIds"), "SecurityGroups": [ref(network.LOAD_BALANCER_GROUP)],
            "LoadBalancerAttributes": [
                # Live updates (Server-Sent Events) and big uploads hold a connection open.
                {"Key": "idle_timeout.timeout_seconds", "Value": "300"},
                {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"}],
            "Tags": self.tags()})
        self.add("GatewayTargetGroup", "AWS::ElasticLoadBalancingV2::TargetGroup", {
            "TargetType": "ip", "Protocol": "HTTP", "Port": gateway.port, "VpcId": ref("VpcId"),
            "HealthCheckPath": "/healthz", "HealthCheckIntervalSeconds": 15, "Matcher": {"HttpCode": "200"},
            "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
            "Tags": self.tags()})
        self.add("HttpsListener", "AWS::ElasticLoadBalancingV2::Listener", {
            "LoadBalancerArn": ref("LoadBalancer"), "Protocol": "HTTPS", "Port": 443,
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "Certificates": [{"CertificateArn": ref("CertificateArn")}],
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": ref("GatewayTargetGroup")}]})
        self.add("HttpRedirectListener", "AWS::ElasticLoadBalancingV2::Listener", {
            "LoadBalancerArn": ref("LoadBalancer"), "Protocol": "HTTP", "Port": 80,
            "DefaultActions": [{"Type": "redirect", "RedirectConfig": {
                "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]})

    def build(self) -> Json:
        self.parameters.update(PARAMETERS)
        self.conditions.update(CONDITIONS)
        for table, local in zip(self.res.tables, self.local.tables, strict=True):
            self.table(table, local)
        self.bucket()
        self.messaging()
        self.log_groups()
        self.sagemaker_role()
        self.serving_role()
        self.secrets()
        self.network()
        self.execution_role()
        for process in PROCESSES:
            self.process(process)
        alarm_resources(self.add, billing_condition="BillingMetricsHere", encrypted=True)
        self.outputs.update(self.stack_outputs())
        return {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"LLM Tuner ({self.prefix}): built by deploy/aws/template.py "
                           "from shared/contracts/resources.py",
            "Parameters": self.parameters, "Conditions": self.conditions,
            "Resources": self.resources, "Outputs": self.outputs,
        }

    def stack_outputs(self) -> Json:
        outputs: Json = {
            "Url": {"Description": "The platform's address", "Value": sub("https://${DomainName}")},
            "LoadBalancerDnsName": {"Description": "Point the domain here (CNAME, or a Route 53 alias)",
                                    "Value": get_att("LoadBalancer", "DNSName")},
            "LoadBalancerHostedZoneId": {"Value": get_att("LoadBalancer", "CanonicalHostedZoneID")},
            "GoogleRedirectUri": {"Description": "Authorized redirect URI of the Google OAuth client",
                                  "Value": sub("https://${DomainName}/auth/google/callback")},
            "BucketName": {"Value": ref("Bucket")},
            "SageMakerExecutionRoleArn": {"Value": get_att("SageMakerExecutionRole", "Arn")},
            "SageMakerServingRoleArn": {"Value": get_att("SageMakerServingRole", "Arn")},
            "ClusterName": {"Value": ref("Cluster")},
            "AlarmTopicArn": {"Value": ref("AlarmTopic")},
        }
        for process in PROCESSES:
            outputs[process.logical_id + "TaskRoleArn"] = {"Value": get_att(process.logical_id + "TaskRole", "Arn")}
        for topic_id in self.topic_ids.values():  # to subscribe people to (security alerts) or tools
            outputs[topic_id + "Arn"] = {"Value": ref(topic_id)}
        return outputs


def _settings_names(service: str) -> set[str]:
    """The environment variable names a service's Settings reads."""
    settings = importlib.import_module(f"services.{service}.settings").Settings
    return {(field.alias or name).upper() for name, field in settings.model_fields.items()}


def log_group_parameter(group: str) -> str:
    """The parameter that says whether the stack creates `group` (false where the account has it already)."""
    return "Create" + camel(group) + "LogGroup"


def _ecs_trust() -> Json:
    return {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}}]}


def alarm_resources(add: Any, billing_condition: str | None, encrypted: bool = False) -> None:
    """The alarm topic (email) and the SageMaker cost alarm. Billing metrics exist only in us-east-1: in another
    region the main stack leaves the alarm out and `make deploy` puts `billing_template()` there. In the main
    stack the topic is encrypted with the messaging key (whose policy lets CloudWatch publish); the billing stack
    has no key of its own, and its alarm says only that a cost threshold passed."""
    topic = {"DisplayName": "LLM Tuner alarms"}
    add("AlarmTopic", "AWS::SNS::Topic", messaging_key.encrypted(topic) if encrypted else topic)
    add("AlarmEmailSubscription", "AWS::SNS::Subscription", {
        "TopicArn": ref("AlarmTopic"), "Protocol": "email", "Endpoint": ref("AlarmEmail")})
    add("SageMakerCostAlarm", "AWS::CloudWatch::Alarm", {
        "AlarmDescription": "This month's estimated SageMaker charges passed the threshold",
        "Namespace": "AWS/Billing", "MetricName": "EstimatedCharges",
        "Dimensions": [{"Name": "ServiceName", "Value": "AmazonSageMaker"}, {"Name": "Currency", "Value": "USD"}],
        "Statistic": "Maximum", "Period": 21600, "EvaluationPeriods": 1,
        "Threshold": ref("SageMakerCostAlarmUsd"), "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching", "AlarmActions": [ref("AlarmTopic")]},
        **({"Condition": billing_condition} if billing_condition else {}))


_ALARM_PARAMETERS: Json = {
    "AlarmEmail": {"Type": "String", "AllowedPattern": r"^[^@\s]+@[^@\s]+$",
                   "Description": "Where alarms go (SageMaker costs, dead-lettered messages); confirm the email"},
    "SageMakerCostAlarmUsd": {"Type": "Number", "Default": 100, "MinValue": 1,
                              "Description": "Alarm when this month's estimated SageMaker charges pass this (USD)"},
}

PARAMETERS: Json = {
    "DomainName": {"Type": "String", "AllowedPattern": r"^[a-z0-9.-]+$",
                   "Description": "The public host name, e.g. tuner.example.com (BASE_URL is https://<it>)"},
    "CertificateArn": {"Type": "String", "AllowedPattern": "^arn:aws[a-z-]*:acm:.+",
                       "Description": "ACM certificate for DomainName, in the stack's region"},
    "VpcId": {"Type": "AWS::EC2::VPC::Id"},
    "VpcCidr": {"Type": "String", "AllowedPattern": r"^\d+\.\d+\.\d+\.\d+/\d+$",
                "Description": "The VPC's CIDR: auth believes forwarded client addresses from it only"},
    "PrivateSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                         "Description": "Subnets for the tasks (two AZs or more), with a NAT gateway for AWS APIs"},
    "PublicSubnetIds": {"Type": "List<AWS::EC2::Subnet::Id>",
                        "Description": "Subnets for the load balancer (two AZs or more)"},
    "ImageTag": {"Type": "String", "AllowedPattern": r"^[A-Za-z0-9_.-]+$",
                 "Description": "The tag `make deploy` pushed every image under"},
    "JwtPrivateKeyPem": {"Type": "String", "NoEcho": True, "MinLength": 1,
                         "Description": "Generated by make deploy on the first deployment, kept on updates"},
    "GoogleClientId": {"Type": "String", "Default": "", "Description": "Empty: Google sign-in off"},
    "SecurityAlertEmail": {"Type": "String", "Default": "", "AllowedPattern": r"^$|^[^@\s]+@[^@\s]+$",
                           "Description": "Who gets auth's security alerts (repeated failed sign-ins) by email; "
                                          "empty: nobody yet (subscribe to the SecurityAlertsTopicArn output)"},
    "GoogleClientSecretValue": {"Type": "String", "Default": "", "NoEcho": True},
    "HuggingFaceToken": {"Type": "String", "Default": "", "NoEcho": True,
                         "Description": "For gated base models; empty: jobs on them fail at launch, saying so"},
    "NoncurrentVersionDays": {"Type": "Number", "Default": 30, "MinValue": 1,
                              "Description": "Deleted or overwritten objects are kept this long"},
    "ArtifactsTieringDays": {"Type": "Number", "Default": 30, "MinValue": 0,
                             "Description": "Training artifacts move to Intelligent-Tiering after this many days"},
    "ServingImageUri": {"Type": "String", "Default": "", "AllowedPattern": r"^$|^\d{12}\.dkr\.ecr\.[a-z0-9.-]+/.+$",
                        "Description": "The container SageMaker endpoints run (an ECR image); empty: AWS's LMI "
                                       "image (DJL Serving with vLLM) in the stack's region"},
    "ServingImageRepositoryArn": {"Type": "String", "Default": "", "AllowedPattern": r"^$|^arn:aws[a-z-]*:ecr:.+",
                                  "Description": "ServingImageUri's ECR repository, which the serving role may pull "
                                                 "from (make deploy derives it); empty: the LMI repository"},
    **_ALARM_PARAMETERS,
}

CONDITIONS: Json = {
    "HasGoogle": {"Fn::And": [{"Fn::Not": [{"Fn::Equals": [ref("GoogleClientId"), ""]}]},
                              {"Fn::Not": [{"Fn::Equals": [ref("GoogleClientSecretValue"), ""]}]}]},
    "HasHuggingFaceToken": {"Fn::Not": [{"Fn::Equals": [ref("HuggingFaceToken"), ""]}]},
    "HasSecurityAlertEmail": {"Fn::Not": [{"Fn::Equals": [ref("SecurityAlertEmail"), ""]}]},
    "HasServingImageUri": {"Fn::Not": [{"Fn::Equals": [ref("ServingImageUri"), ""]}]},
    "HasServingImageRepositoryArn": {"Fn::Not": [{"Fn::Equals": [ref("ServingImageRepositoryArn"), ""]}]},
    "BillingMetricsHere": {"Fn::Equals": [ref("AWS::Region"), "us-east-1"]},
}


def build(prefix: str = res.PREFIX) -> Json:
    return _Builder(prefix).build()


def billing_template() -> Json:
    """The cost alarm alone, for us-east-1 when the platform runs in another region."""
    resources: Json = {}

    def add(logical_id: str, type_: str, properties: Json, **extra: Any) -> None:
        resources[logical_id] = {"Type": type_, **extra, "Properties": properties}

    alarm_resources(add, billing_condition=None)
    return {"AWSTemplateFormatVersion": "2010-09-09",
            "Description": "LLM Tuner: the SageMaker cost alarm (billing metrics live in us-east-1)",
            "Parameters": _ALARM_PARAMETERS, "Resources": resources}


def render(template: Json) -> str:
    return json.dumps(template, indent=1, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TEMPLATE_FILE)
    parser.add_argument("--prefix", default=res.PREFIX, help="resource name prefix (default %(default)s)")
    args = parser.parse_args()
    args.out.write_text(render(build(args.prefix)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
