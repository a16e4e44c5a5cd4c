"""The CloudFormation template deployed into the embedded AWS (moto's CloudFormation), then used for real.

moto's CloudFormation creates tables, the bucket, the messaging key and the topics it encrypts, queues, the
EventBridge rule, log groups, IAM roles, security groups and the load balancer with its listeners. It cannot create
SNS subscriptions, queue and bucket policies, Secrets Manager secrets, alarms, autoscaling, security group egress
rules or Cloud Map resources (nor, through the secrets, the ECS task definitions): the stack here is the template
built by the same code, less those types and whatever refers to them; tests/unit/test_cfn_template.py,
tests/unit/test_cfn_security.py and cfn-lint check the rest. The subscriptions are then made from the
template's own Subscription resources, so the filter policies that route messages are the template's.

The stack gets a prefix of its own, so its names never meet the `llm-tuner-*` ones other tests provision.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from deploy.aws import template
from services.training.models import Job
from services.training.settings import Settings as TrainingSettings
from services.training.store import JobsStore
from shared.aws import AwsClients
from shared.contracts import resources, sagemaker_events
from shared.contracts.files_events import FILE_UPLOADED, FILE_VALIDATED, FileUploaded, FileValidated
from shared.envelope import new_event, parse_wire, publish
from tests.support.aws import AwsEndpoint

MOTO_TYPES = {
    "AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SNS::Topic", "AWS::SQS::Queue", "AWS::Events::Rule",
    "AWS::Logs::LogGroup", "AWS::IAM::Role", "AWS::ECS::Cluster", "AWS::ECS::TaskDefinition", "AWS::ECS::Service",
    "AWS::EC2::SecurityGroup", "AWS::EC2::SecurityGroupIngress", "AWS::ElasticLoadBalancingV2::LoadBalancer",
    "AWS::ElasticLoadBalancingV2::TargetGroup", "AWS::ElasticLoadBalancingV2::Listener", "AWS::KMS::Key",
    "AWS::KMS::Alias",
}


def _references(node: Any) -> set[str]:
    if isinstance(node, dict):
        found: set[str] = set()
        for key, value in node.items():
            found |= {value} if key == "Ref" and isinstance(value, str) else \
                {value[0]} if key == "Fn::GetAtt" else _references(value)
        return found
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node)) if node else set()
    return set()


def restrict(full: dict[str, Any], types: set[str]) -> dict[str, Any]:
    """The template less the resources of other types and, transitively, whatever refers to them."""
    kept = {k: v for k, v in full["Resources"].items() if v["Type"] in types}
    known = set(full["Parameters"])
    while True:
        dangling = [k for k, v in kept.items()
                    if any(r not in kept and r not in known and not r.startswith("AWS::") for r in _references(v))]
        if not dangling:
            return {**full, "Resources": kept, "Outputs": {}}
        for key in dangling:
            del kept[key]


@pytest.fixture(scope="module")
def stack(aws: AwsEndpoint) -> Iterator[dict[str, Any]]:
    prefix = f"cfn{uuid.uuid4().hex[:8]}"
    full = template.build(prefix)
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = ",".join(s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"][:2])
    certificate = boto3.client("acm").request_certificate(DomainName="tuner.example.com")["CertificateArn"]
    values = {"DomainName": "tuner.example.com", "CertificateArn": certificate, "VpcId": vpc["VpcId"],
              "VpcCidr": vpc["CidrBlock"], "PrivateSubnetIds": subnets, "PublicSubnetIds": subnets,
              "ImageTag": "test", "JwtPrivateKeyPem": "not-used-here", "AlarmEmail": "ops@example.com"}
    logs = boto3.client("logs")
    for group in resources.describe().log_groups:  # the account's own (other tests' SageMaker runs made it): kept
        found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        values[template.log_group_parameter(group)] = "false" if any(g["logGroupName"] == group for g in found) \
            else "true"
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName=prefix, TemplateBody=json.dumps(restrict(full, MOTO_TYPES)),
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
                     Capabilities=["CAPABILITY_IAM"])
    cfn.get_waiter("stack_create_complete").wait(StackName=prefix, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    # (moto lists a resource left out by a false Condition with an empty logical id: not created, skipped)
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cfn.list_stack_resources(StackName=prefix)["StackResourceSummaries"] if r["LogicalResourceId"]}
    yield {"prefix": prefix, "template": full, "physical": physical}
    cfn.delete_stack(StackName=prefix)


def queue_url(name: str) -> str:
    return str(boto3.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def test_the_supported_part_of_the_template_is_what_moto_created(stack: dict[str, Any]) -> None:
    created = {stack["template"]["Resources"][k]["Type"] for k in stack["physical"]}
    # The data of shared/contracts/resources.py and the load balancer: if the restriction ever dropped these, this test
    # would no longer test the template.
    assert {"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SNS::Topic", "AWS::SQS::Queue", "AWS::Events::Rule",
            "AWS::IAM::Role", "AWS::ElasticLoadBalancingV2::Listener"} <= created
    prefix = stack["prefix"]
    jobs = boto3.client("dynamodb").describe_table(TableName=f"{prefix}-training-jobs")["Table"]
    assert {i["IndexName"] for i in jobs["GlobalSecondaryIndexes"]} == {"user-index", "status-index"}
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url(f"{prefix}-files-worker"), AttributeNames=["RedrivePolicy"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(f":{prefix}-files-worker-dlq")
    targets = boto3.client("events").list_targets_by_rule(Rule=f"{prefix}-sagemaker-training-state")["Targets"]
    assert [t["Arn"].rsplit(":", 1)[1] for t in targets] == [f"{prefix}-training-worker"]
    topic = boto3.client("sns").get_topic_attributes(TopicArn=stack["physical"]["AuthEventsTopic"])["Attributes"]
    assert topic["KmsMasterKeyId"] == stack["physical"]["MessagingKey"]  # user.created carries emails: encrypted


def subscribe_as_the_template_says(stack: dict[str, Any]) -> None:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    for resource in stack["template"]["Resources"].values():
        props = resource["Properties"]
        if resource["Type"] != "AWS::SNS::Subscription" or props["Protocol"] != "sqs":
            continue
        topic_arn = stack["physical"][props["TopicArn"]["Ref"]]
        queue = stack["physical"][props["Endpoint"]["Fn::GetAtt"][0]]  # moto's physical id is the URL
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={
            "FilterPolicy": json.dumps(props["FilterPolicy"]), "FilterPolicyScope": props["FilterPolicyScope"],
            "RawMessageDelivery": str(props["RawMessageDelivery"]).lower()})


def receive_types(url: str, want: int, deadline_s: float = 10) -> list[str]:
    sqs, deadline = boto3.client("sqs"), time.monotonic() + deadline_s
    types: list[str] = []
    while len(types) < want and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            types.append(parse_wire(message["Body"]).type)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return types


async def test_events_reach_exactly_the_queues_the_filter_policies_name(stack: dict[str, Any]) -> None:
    """GIVEN the template's subscriptions WHEN files publishes file.uploaded and file.validated THEN the files
    worker's queue gets only the first (its filter), training's queue both, each as the raw envelope."""
    subscribe_as_the_template_says(stack)
    prefix = stack["prefix"]
    aws = AwsClients(TrainingSettings())
    try:
        sns = await aws.get("sns")
        topic = stack["physical"]["FilesEventsTopic"]
        fields = {"file_id": "file-1", "user_id": "user-1", "purpose": "fine-tune", "filename": "a.jsonl",
                  "bytes": 3, "s3_uri": "s3://bucket/files/user-1/file-1"}
        for event in (FileUploaded(**fields), FileValidated(**fields, examples=1)):
            await publish(sns, topic, new_event(event, user_id="user-1"))
    finally:
        await aws.close()
    training = receive_types(queue_url(f"{prefix}-training-worker"), want=2)
    assert sorted(training) == [FILE_UPLOADED, FILE_VALIDATED]
    assert receive_types(queue_url(f"{prefix}-files-worker"), want=2, deadline_s=3) == [FILE_UPLOADED]


def test_sagemaker_state_changes_reach_training_through_the_rule(stack: dict[str, Any]) -> None:
    boto3.client("events").put_events(Entries=[{
        "Source": sagemaker_events.EVENTBRIDGE_SOURCE, "DetailType": sagemaker_events.EVENTBRIDGE_DETAIL_TYPE,
        "Detail": json.dumps({"TrainingJobName": "ftjob-1", "TrainingJobStatus": "InProgress"})}])
    assert receive_types(queue_url(f"{stack['prefix']}-training-worker"), want=1) == [
        sagemaker_events.TRAINING_JOB_STATE_CHANGED]


async def test_the_training_store_works_on_the_created_tables_and_index(stack: dict[str, Any]) -> None:
    """The service's own store against the stack's tables: a conditional write and a query on the user-index GSI."""
    prefix = stack["prefix"]
    aws = AwsClients(TrainingSettings())
    try:
        store = JobsStore(await aws.get("dynamodb"), f"{prefix}-training-jobs", f"{prefix}-training-events",
                          f"{prefix}-training-files")
        for n in range(2):
            await store.create(Job(job_id=f"ftjob-{n}", user_id="user-1", created_at=f"2026-01-0{n + 1}T00:00:00",
                                   created_at_unix=n, model="llm-tuner/tiny-chat", training_file="file-1",
                                   hyperparameters={}, seed=1, instance_type="ml.m5.large"))
        jobs, has_more = await store.list_for_user("user-1", limit=10, after=None)
        assert [j.job_id for j in jobs] == ["ftjob-1", "ftjob-0"] and not has_more  # newest first
        assert await store.transition("ftjob-0", "queued")
        assert not await store.transition("ftjob-0", "queued")  # the condition holds
    finally:
        await aws.close()


def test_make_deploy_creates_then_updates_and_teardown_removes_and_empties(
        aws: AwsEndpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy.py's real path against the embedded AWS: account check, template upload, change set, wait, a
    second run that finds nothing to change, teardown with the bucket emptied. Docker is not here, so the
    image step is replaced, and moto deploys the template's supported part (as above)."""
    from deploy.aws import deploy, images

    full_build = template.build
    monkeypatch.setattr(template, "build", lambda prefix: restrict(full_build(prefix), MOTO_TYPES))
    monkeypatch.setattr(images, "push", lambda *args, **kwargs: None)
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]
    subnets = tuple(s["SubnetId"] for s in ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"][:2])
    config = deploy.Config(
        account_id=boto3.client("sts").get_caller_identity()["Account"], region="us-east-1",
        domain="tuner.example.com", vpc_id=vpc["VpcId"], vpc_cidr=vpc["CidrBlock"], private_subnet_ids=subnets,
        public_subnet_ids=subnets, alarm_email="ops@example.com", prefix=f"dep{uuid.uuid4().hex[:8]}",
        certificate_arn=boto3.client("acm").request_certificate(DomainName="tuner.example.com")["CertificateArn"])
    said: list[str] = []

    deploy.deploy(config, dry_run=False, env={}, say=said.append, tag="t1")
    assert f"{config.stack}: creating change set deploy-t1 (CREATE)" in said
    assert any(line.strip().startswith("Add") and "FilesWorkerQueue" in line for line in said)
    tables = boto3.client("dynamodb").list_tables()["TableNames"]
    assert f"{config.prefix}-users" in tables
    deploy.deploy(config, dry_run=False, env={}, say=said.append, tag="t1")
    assert f"{config.stack}: nothing to change" in said
    assert any("JwtPrivateKeyPem=<previous>" in line for line in said)  # the key is generated once

    boto3.client("s3").put_object(Bucket=config.bucket, Key="files/u/f", Body=b"data")
    deploy.teardown(config, dry_run=False, empty=True, say=said.append)
    assert f"{config.prefix}-users" not in boto3.client("dynamodb").list_tables()["TableNames"]
    assert config.bucket not in {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}
