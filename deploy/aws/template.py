"""The CloudFormation template for a whole LLM Tuner deployment, built from `shared.contracts.resources`.

Tables, bucket, topics, queues, subscriptions, rules and log groups come from the one resource description the
local cluster provisions too, so an addition there reaches AWS without a second list to keep in step. Around
them: the bucket's settings and policy (`deploy.aws.storage`), the SageMaker execution role (training jobs) and
serving role (endpoints) (`deploy.aws.sagemaker_roles`), one least-privilege task role per process
(`deploy.aws.iam`), each limited to its prefixes of the bucket (`deploy.aws.bucket_access`), the KMS key the topics
are encrypted with (`deploy.aws.messaging_key`), Secrets Manager secrets (the service token every task gets), ECS
Fargate services per process (`deploy.aws.processes`), a security group per process and an HTTPS load balancer
in front of the gateway only (`deploy.aws.network`), per-process scaling (`deploy.aws.scaling`), and the
parameters and alarms (`deploy.aws.stack_parameters`).

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

from deploy.aws import iam, images, messaging_key, network, sagemaker_roles, scaling, stack_parameters, storage
from deploy.aws.cfn import Json, get_att, ref, sub
from deploy.aws.processes import PROCESSES, SERVICES, Process, api_of
from shared.contracts import resources as res
from shared.contracts.resources import Queue, Resources, Table

TEMPLATE_FILE = Path(__file__).with_name("llm-tuner.template.json")
CONTAINER_USER = "10001"  # the image's non-root user (deploy/docker/service.Dockerfile)
HEALTHCHECK = ["CMD", "python", "/app/deploy/docker/healthcheck.py"]
# Read-only root file system: the only writable place is an ephemeral /tmp (multipart spooling, temp files).
TMP_VOLUME = "tmp"
SERVICE_TOKEN_SECRET = "ServiceTokenSecret"  # noqa: S105 (a logical id, not a secret)
SERVICE_TOKEN_LENGTH = 64  # letters and digits: about 380 bits


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

    def serving_image_uri(self) -> Json:
        """SERVING_IMAGE_URI: the ServingImageUri parameter, else AWS's LMI image in the stack's region."""
        lmi = images.lmi_image()
        default = sub(f"{lmi.account}.dkr.ecr.${{AWS::Region}}.${{AWS::URLSuffix}}/{lmi.repository}{lmi.reference}")
        return {"Fn::If": ["HasServingImageUri", ref("ServingImageUri"), default]}

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
            queue = next((q for q in self.res.queues if q.owner == process.service), None)
            queue_name = get_att(self.queue_ids[self._local_name(queue.name)], "QueueName") if queue else None
            scaling.scaling(self.add, self.prefix, process, queue_name if process.kind == "worker" else None)

    # ---- network -------------------------------------------------------------------------------------------

    def network(self) -> None:
        self.add("Cluster", "AWS::ECS::Cluster", {
            "ClusterName": self.prefix, "ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}],
            "Tags": self.tags()})
        self.add("Namespace", "AWS::ServiceDiscovery::PrivateDnsNamespace", {
            "Name": f"{self.prefix}.internal", "Vpc": ref("VpcId"),
            "Description": "The services' private addresses: <api>.<prefix>.internal"})
        network.security_groups(self.add, self.tags())
        network.load_balancer(self.add, self.prefix, self.tags())
    def build(self) -> Json:
        self.parameters.update(stack_parameters.PARAMETERS)
        self.conditions.update(stack_parameters.CONDITIONS)
        for table, local in zip(self.res.tables, self.local.tables, strict=True):
            self.table(table, local)
        storage.bucket(self.add, self.res.bucket, self.prefix, self.tags())
        self.messaging()
        self.log_groups()
        sagemaker_roles.sagemaker_role(self.add, self.tags(), iam.log_group_arns(self.res, self.refs()),
                                       self.repository_arn("trainer"))
        sagemaker_roles.serving_role(self.add, self.tags())
        self.secrets()
        self.network()
        self.execution_role()
        for process in PROCESSES:
            self.process(process)
        stack_parameters.alarm_resources(self.add, billing_condition="BillingMetricsHere", encrypted=True)
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


def build(prefix: str = res.PREFIX) -> Json:
    return _Builder(prefix).build()


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
