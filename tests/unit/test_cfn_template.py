"""The CloudFormation template (deploy/aws/template.py): built from shared/contracts/resources.py, lint-clean, least
privilege per process, and the image/deploy command plans. No AWS, no network, no Docker."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from deploy.aws import deploy, iam, images, messaging_key, sagemaker_roles, stack_parameters, template
from deploy.aws.processes import PROCESSES, SERVICES, Process
from deploy.docker import healthcheck
from shared.contracts import resources

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "deploy/aws/config.example.toml"


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return template.build()


def of_type(t: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t["Resources"].items() if v["Type"] == type_}


def references(node: Any) -> set[str]:
    """Every logical id a piece of template points at (Ref, GetAtt)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0])
            else:
                found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return found


# ---- the template stays what the code builds, and lint-clean ---------------------------------------------

def test_the_committed_template_is_what_template_py_builds() -> None:
    committed = (ROOT / "deploy/aws/llm-tuner.template.json").read_text()
    assert committed == template.render(template.build()), \
        "deploy/aws/llm-tuner.template.json is stale: run python -m deploy.aws.template"


def test_cfn_lint_finds_nothing_in_either_template() -> None:
    from cfnlint.api import ManualArgs, lint

    for body in (template.build(), stack_parameters.billing_template()):
        matches = lint(template.render(body), config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
        assert [str(m) for m in matches] == []  # no error, no warning


# ---- data: everything in shared/contracts/resources.py, with production settings ------------------------------------

def test_every_table_is_on_demand_with_its_keys_indexes_ttl_recovery_and_encryption(cfn: dict[str, Any]) -> None:
    tables = {r["Properties"]["TableName"]: r["Properties"] for r in of_type(cfn, "AWS::DynamoDB::Table").values()}
    assert set(tables) == {t.name for t in resources.describe().tables}
    for table in resources.describe().tables:
        props = tables[table.name]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["KeySchema"][0] == {"AttributeName": table.hash_key.name, "KeyType": "HASH"}
        assert {i["IndexName"] for i in props.get("GlobalSecondaryIndexes", [])} == {i.name for i in table.indexes}
        assert props.get("TimeToLiveSpecification") == (
            {"AttributeName": table.ttl_attribute, "Enabled": True} if table.ttl_attribute else None)
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}


def test_the_bucket_is_versioned_encrypted_private_tls_only_and_cleans_up_after_itself(cfn: dict[str, Any]) -> None:
    bucket = cfn["Resources"]["Bucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": resources.describe().bucket.abort_incomplete_uploads_days}
    assert "NoncurrentVersionExpiration" in rules["expire-noncurrent-versions"]
    assert rules["finished-job-artifacts"]["Prefix"] == "training-jobs/"  # SageMaker's output and checkpoints
    cors = props["CorsConfiguration"]["CorsRules"][0]
    assert cors["AllowedOrigins"] == [{"Fn::Sub": "https://${DomainName}"}] and cors["ExposedHeaders"] == ["ETag"]

    statements = {s["Sid"]: s for s in cfn["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    deny = statements["DenyInsecureTransport"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    for sid in ("AllowSageMakerList", "AllowSageMakerObjects"):
        assert statements[sid]["Principal"] == {"AWS": {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}}


def test_queues_have_dlqs_and_subscriptions_filter_on_the_type_attribute(cfn: dict[str, Any]) -> None:
    described = resources.describe()
    queues = {r["Properties"]["QueueName"]: (k, r["Properties"]) for k, r in of_type(cfn, "AWS::SQS::Queue").items()}
    ids = {name: logical_id for name, (logical_id, _) in queues.items()}
    for queue in described.queues:
        props = queues[queue.name][1]
        assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [ids[queue.dlq_name], "Arn"]},
                                          "maxReceiveCount": queue.max_receives}
        assert props["VisibilityTimeout"] == queue.visibility_timeout_s
    topics = {r["Properties"]["TopicName"]: k for k, r in of_type(cfn, "AWS::SNS::Topic").items()
              if "TopicName" in r["Properties"]}
    subscriptions = {(s["Properties"]["TopicArn"]["Ref"], s["Properties"]["Endpoint"]["Fn::GetAtt"][0]): s["Properties"]
                     for s in of_type(cfn, "AWS::SNS::Subscription").values() if s["Properties"]["Protocol"] == "sqs"}
    assert len(subscriptions) == len(described.subscriptions)
    for sub in described.subscriptions:
        props = subscriptions[(topics[sub.topic], ids[sub.queue])]
        assert props["FilterPolicy"] == {"type": list(sub.event_types)}
        assert props["RawMessageDelivery"] is True and props["FilterPolicyScope"] == "MessageAttributes"
    policies = {p["Properties"]["Queues"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"][0]
                for p in of_type(cfn, "AWS::SQS::QueuePolicy").values()}
    for sub in described.subscriptions:  # each queue lets exactly its own topics (and rules) send
        assert {"Ref": topics[sub.topic]} in policies[ids[sub.queue]]["Condition"]["ArnEquals"]["aws:SourceArn"]


def test_the_sagemaker_rule_targets_trainings_queue_which_lets_it_send(cfn: dict[str, Any]) -> None:
    rule = next(iter(of_type(cfn, "AWS::Events::Rule").items()))
    logical_id, props = rule[0], rule[1]["Properties"]
    assert props["EventPattern"] == resources.describe().rules[0].pattern
    assert props["Targets"] == [{"Id": "TrainingWorkerQueue", "Arn": {"Fn::GetAtt": ["TrainingWorkerQueue", "Arn"]}}]
    policy = cfn["Resources"]["TrainingWorkerQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert {"Fn::GetAtt": [logical_id, "Arn"]} in policy["Condition"]["ArnEquals"]["aws:SourceArn"]


def test_additions_to_resources_py_reach_the_template_and_the_owners_role(monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a new files table and a new gateway replica subscription in the description WHEN the template is
    built THEN both are there, and the owners' roles cover them (nothing here lists resources by hand)."""
    described = resources.describe()
    grown = replace(described, tables=(*described.tables, resources.Table("llm-tuner-files-extra", "files",
                                                                          resources.Key("id"))),
                    replica_subscriptions=(*described.replica_subscriptions, resources.ReplicaSubscription(
                        resources.TRAINING_TOPIC, "gateway", "llm-tuner-other-", ("training.job.metrics",))))
    monkeypatch.setattr(resources, "describe", lambda bucket_name=resources.BUCKET: grown)
    built = template.build()
    assert built["Resources"]["FilesExtraTable"]["Properties"]["TableName"] == "llm-tuner-files-extra"
    files_policy = json.dumps(built["Resources"]["FilesTaskRole"]["Properties"]["Policies"])
    assert "FilesExtraTable" in files_policy
    assert "FilesExtraTable" not in json.dumps(built["Resources"]["TrainingTaskRole"]["Properties"]["Policies"])
    gateway_policy = json.dumps(built["Resources"]["GatewayTaskRole"]["Properties"]["Policies"])
    assert "llm-tuner-other-*" in gateway_policy and "TrainingEventsTopic" in gateway_policy


def test_a_second_prefix_renames_every_resource() -> None:
    built = json.dumps(template.build("staging")["Resources"])
    assert '"llm-tuner-' not in built.replace('"llm-tuner:', "")  # tag keys keep the project's name
    assert '"staging-users"' in built


# ---- IAM: what each process calls is granted, on its own resources only ----------------------------------

_SERVICES = ("dynamodb", "s3", "sns", "sqs", "sagemaker", "sagemaker-runtime", "logs", "service-quotas",
             "secretsmanager", "events", "sts", "iam", "ecr", "cloudwatch")
# How the code names its clients (stores take `db`, handlers get `deps.s3`, ...).
_CLIENT_NAMES = {"db": "dynamodb", "_db": "dynamodb", "s3": "s3", "_s3": "s3", "sqs": "sqs", "_sqs": "sqs",
                 "sns": "sns", "_sns": "sns", "sagemaker": "sagemaker", "runtime": "sagemaker-runtime",
                 "logs": "logs", "sts": "sts"}
# shared/dynamo.py's helpers page through a Query (or the Scan named as their second argument) themselves.
_DYNAMO_HELPERS = {"all_items", "items_of_user"}


@cache
def _operations() -> dict[str, dict[str, str]]:
    """snake_case method -> {service: OperationName}, from botocore's own service models."""
    session = botocore.session.get_session()
    ops: dict[str, dict[str, str]] = {}
    for service in _SERVICES:
        for op in session.get_service_model(service).operation_names:
            ops.setdefault(xform_name(op), {})[service] = op
    return ops


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def import_closure(module: str) -> set[Path]:
    """The project modules (services/, shared/) a process's entry module imports, transitively."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
    return {p for p in seen if p.relative_to(ROOT).parts[0] in ("services", "shared")}


def _client_of(receiver: ast.expr, method: str) -> str | None:
    if (isinstance(receiver, ast.Await) and isinstance(receiver.value, ast.Call)
            and isinstance(receiver.value.func, ast.Attribute) and receiver.value.func.attr == "get"
            and receiver.value.args and isinstance(receiver.value.args[0], ast.Constant)):
        return str(receiver.value.args[0].value)  # `(await aws.get("sns")).unsubscribe(...)`
    name = receiver.attr if isinstance(receiver, ast.Attribute) else receiver.id if isinstance(receiver, ast.Name) \
        else None
    if name in _CLIENT_NAMES:
        return _CLIENT_NAMES[name]
    if name and name.endswith("client") and len(_operations().get(method, {})) == 1:
        return next(iter(_operations()[method]))  # `self._client.get_service_quota(...)`
    return None


def _helper_call(node: ast.Call) -> str | None:
    """The DynamoDB operation a shared/dynamo.py helper runs: `all_items(db, "scan", ...)` scans, else a Query."""
    name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr \
        if isinstance(node.func, ast.Attribute) else None
    if name not in _DYNAMO_HELPERS:
        return None
    operation = "query"
    if name == "all_items" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
        operation = str(node.args[1].value)
    return f"dynamodb:{_operations()[operation]['dynamodb']}"


def aws_calls(files: set[Path]) -> set[str]:
    """`service:Operation` for every AWS client operation in the files: called, or passed on to be called
    (`_create(deps.sagemaker.create_model, ...)`), paginators, presigned URLs and shared/dynamo.py's helpers
    included."""
    calls: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and (helper := _helper_call(node)):
                calls.add(helper)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("get_paginator", "generate_presigned_url") and node.args \
                    and isinstance(node.args[0], ast.Constant):
                receiver, method = node.func.value, str(node.args[0].value)
            elif isinstance(node, ast.Attribute):
                receiver, method = node.value, node.attr
            else:
                continue
            service = _client_of(receiver, method)
            if service and service in _operations().get(method, {}):
                calls.add(f"{service}:{_operations()[method][service]}")
    return calls


def test_the_scanner_finds_the_calls_it_must() -> None:
    """So that the next test can fail: a scanner that found nothing would grant nothing and pass."""
    worker = aws_calls(import_closure("services.training.worker"))
    assert {"sagemaker:CreateTrainingJob", "service-quotas:GetServiceQuota", "dynamodb:Query", "sqs:ReceiveMessage",
            "sns:Publish", "s3:ListObjectVersions"} <= worker
    assert "sns:Subscribe" in aws_calls(import_closure("services.gateway.app"))
    assert "s3:UploadPart" in aws_calls(import_closure("services.files.app"))  # a presigned part URL
    assert "dynamodb:Scan" in aws_calls(import_closure("services.auth.app"))  # all_items(db, "scan", ...)
    assert "dynamodb:Query" in aws_calls(import_closure("services.files.app"))  # items_of_user(...)
    serving = aws_calls(import_closure("services.inference.worker"))
    assert {"sagemaker:CreateModel", "sagemaker-runtime:InvokeEndpointWithResponseStream"} <= serving  # passed on


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_iam_calls_are_what_the_code_calls(process: Process) -> None:
    """CALLS is the code's calls less the documented NOT_CALLED: a new call without a grant fails here, and
    so does a grant nobody calls any more."""
    scanned = aws_calls(import_closure(process.module))
    not_called = iam.NOT_CALLED.get(process.name, {})
    assert set(not_called) <= scanned, "NOT_CALLED names operations the code no longer has"
    assert scanned - set(not_called) == iam.CALLS[process.name]


def _policy(cfn: dict[str, Any], process: Process) -> dict[str, Any]:
    role = cfn["Resources"][process.logical_id + "TaskRole"]["Properties"]
    assert len(role["Policies"]) == 1 and "ManagedPolicyArns" not in role
    document: dict[str, Any] = role["Policies"][0]["PolicyDocument"]
    return document


def _owner_of(cfn: dict[str, Any], logical_id: str) -> tuple[str, str | None]:
    resource = cfn["Resources"][logical_id]
    tags = {t["Key"]: t["Value"] for t in resource["Properties"].get("Tags", [])}
    return resource["Type"], tags.get("llm-tuner:owner")


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_each_role_grants_its_calls_on_its_own_resources_only(cfn: dict[str, Any], process: Process) -> None:
    statements = _policy(cfn, process)["Statement"]
    granted = {a for s in statements for a in s["Action"]}
    for operation in iam.CALLS[process.name]:
        assert set(iam.iam_actions(operation)) <= granted, operation
    assert granted == iam.granted_actions(process.name)  # and nothing else
    replica_topics = {template.camel(r.topic) + "Topic" for r in resources.describe().replica_subscriptions
                      if r.owner == process.service}
    for statement in statements:
        assert statement["Effect"] == "Allow" and not any(a.endswith("*") for a in statement["Action"])
        if "*" in statement["Resource"]:
            assert statement["Resource"] == ["*"]
            assert set(statement["Action"]) <= set(iam.WILDCARD_REASONS), statement
        for logical_id in references(statement["Resource"]) - {"Bucket", "SageMakerExecutionRole",
                                                               "SageMakerServingRole"}:
            if logical_id == messaging_key.LOGICAL_ID:  # the topics' key, for publishing only
                assert statement["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"] and "sns:Publish" in granted
                continue
            type_, owner = _owner_of(cfn, logical_id)
            if type_ == "AWS::SNS::Topic" and statement["Sid"] == "ReplicaSubscriptions":
                assert logical_id in replica_topics
            else:
                assert owner == process.service, f"{process.name} may touch {logical_id} ({owner}'s)"


def test_the_files_role_has_nothing_of_training() -> None:
    files = json.dumps(template.build()["Resources"]["FilesTaskRole"])
    for table in resources.describe().tables:
        if table.owner == "training":
            assert template.camel(table.name) + "Table" not in files
    assert "sagemaker" not in files and "TrainingWorkerQueue" not in files and "iam:PassRole" not in files


def test_only_the_processes_that_launch_pass_a_role_each_only_its_own_to_sagemaker(cfn: dict[str, Any]) -> None:
    passing = {p.name: p for p in PROCESSES if "iam:PassRole" in iam.granted_actions(p.name)}
    assert set(passing) == {"training-worker", "inference-worker", "inference-reconciler"}
    roles = {"training": "SageMakerExecutionRole", "inference": "SageMakerServingRole"}
    for process in passing.values():
        statement = next(s for s in _policy(cfn, process)["Statement"] if s["Action"] == ["iam:PassRole"])
        assert statement["Resource"] == [{"Fn::GetAtt": [roles[process.service], "Arn"]}]
        assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    jobs = next(s for s in _policy(cfn, passing["training-worker"])["Statement"] if s["Sid"] == "OwnTrainingJobs")
    assert jobs["Resource"][0]["Fn::Sub"].endswith(f":training-job/{iam.TRAINING_JOB_NAME_PREFIX}*")


_INFERENCE = [p for p in PROCESSES if p.service == "inference"]


@pytest.mark.parametrize("process", _INFERENCE, ids=lambda p: p.name)
def test_serving_roles_touch_only_sagemaker_resources_named_llmt_each_action_on_its_types(
        cfn: dict[str, Any], process: Process) -> None:
    statements = [s for s in _policy(cfn, process)["Statement"] if any(a.startswith("sagemaker:") for a in s["Action"])]
    allowed: dict[str, set[str]] = {}  # action -> the resource types some statement allows it on
    for statement in statements:
        types = set()
        for resource in statement["Resource"]:
            resource_type, name = resource["Fn::Sub"].rsplit(":", 1)[1].split("/")
            assert name == f"{iam.SERVING_NAME_PREFIX}*", resource
            types.add(resource_type)
        for action in statement["Action"]:
            allowed.setdefault(action, set()).update(types)
    for action, types in allowed.items():
        documented = iam.SAGEMAKER_RESOURCE_TYPES.get(action)
        if documented is None:  # AddTags: on what the process creates
            assert types == {iam.SAGEMAKER_CREATES[a] for a in allowed if a in iam.SAGEMAKER_CREATES}
        else:  # every type the Service Authorization Reference requires, and no other
            assert types == set(documented), action
    if process.kind == "api":  # describes and invokes, creates and deletes nothing
        assert set(allowed) == {"sagemaker:DescribeEndpoint", "sagemaker:DescribeInferenceComponent",
                                "sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"}
        return
    assert {"sagemaker:CreateModel", "sagemaker:CreateEndpoint", "sagemaker:DeleteEndpoint"} <= set(allowed)
    tagging = next(s for s in statements if s["Action"] == ["sagemaker:AddTags"])
    assert tagging["Condition"] == {"ForAllValues:StringEquals": {"aws:TagKeys": list(iam.SERVING_TAG_KEYS)}}


def test_serving_names_and_tags_are_what_the_serving_policies_allow() -> None:
    from services.inference import endpoints

    stack = endpoints.stack_name("user-1", "llm-tuner/tiny-chat", "ml.g5.xlarge")
    for name in (stack, endpoints.base_component_name(stack), endpoints.adapter_component_name(stack, "ft:x")):
        assert name.startswith(iam.SERVING_NAME_PREFIX) and name == name.lower() and len(name) <= 63
    tag_keys = set(re.findall(r'"Key": "([^"]+)"', inspect.getsource(endpoints)))
    assert tag_keys and tag_keys <= set(iam.SERVING_TAG_KEYS)


@pytest.mark.parametrize("process", _INFERENCE, ids=lambda p: p.name)
def test_serving_roles_use_only_their_prefixes_of_the_bucket(cfn: dict[str, Any], process: Process) -> None:
    objects = [r for s in _policy(cfn, process)["Statement"] for r in s["Resource"]
               if isinstance(r, dict) and references(r) == {"Bucket"}]
    suffixes = {r["Fn::Join"][1][1] for r in objects}
    assert "/*" not in suffixes  # never the whole bucket
    expected = {"/evaluations/*", "/normalized/*"} if process.name == "inference-worker" else \
        {"/evaluations/*"} if iam.granted_actions(process.name) & {"s3:GetObject"} else set()
    assert suffixes == expected
    for statement in _policy(cfn, process)["Statement"]:
        if statement["Resource"] == [{"Fn::Join": ["", [{"Fn::GetAtt": ["Bucket", "Arn"]}, "/normalized/*"]]}]:
            assert statement["Action"] == ["s3:GetObject"]  # files' objects: read only


def test_the_serving_role_reads_models_pulls_its_image_and_writes_only_its_logs(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["SageMakerServingRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    assert "ManagedPolicyArns" not in role
    statements = {s["Sid"]: s for s in role["Policies"][0]["PolicyDocument"]["Statement"] if "Sid" in s}
    actions = {a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not {a for a in actions if a.startswith("s3:") and a not in ("s3:GetObject", "s3:ListBucket",
                                                                          "s3:GetBucketLocation")}
    read = statements["ReadModels"]["Resource"]
    assert [r["Fn::Join"][1][1] for r in read] == [f"/{sagemaker_roles.BASE_MODELS_PREFIX}*",
                                                   f"/{sagemaker_roles.ADAPTER_OBJECTS}"]
    assert statements["BaseModelListing"]["Condition"] == {"StringLike": {"s3:prefix": ["base-models/*"]}}
    group, streams = statements["EndpointLogs"]["Resource"]
    assert group["Fn::Sub"].endswith(":log-group:/aws/sagemaker/Endpoints/llmt-*")
    assert streams == {"Fn::Join": ["", [group, ":log-stream:*"]]}
    assert statements["EndpointMetrics"]["Condition"]["StringEquals"]["cloudwatch:namespace"] == \
        sagemaker_roles.SERVING_METRICS_NAMESPACES
    pull = statements["PullServingImage"]["Resource"]["Fn::If"]
    assert pull[0] == "HasServingImageRepositoryArn" and pull[2] == {
        "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:763104351884:repository/djl-inference"}
    for s in statements.values():
        if s["Resource"] == "*":
            assert s["Action"] in iam.WILDCARD_REASONS


def test_the_gateway_reaches_the_inference_api_which_the_tasks_configure(cfn: dict[str, Any]) -> None:
    def environment(process: str) -> dict[str, Any]:
        container = cfn["Resources"][process + "TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        return {e["Name"]: e["Value"] for e in container["Environment"] if "Name" in e}

    assert environment("Gateway")["INFERENCE_URL"] == "http://inference.llm-tuner.internal:5004"
    assert cfn["Resources"]["InferenceDiscovery"]["Properties"]["Name"] == "inference"
    ingress = cfn["Resources"]["InferenceFromGateway"]["Properties"]
    assert ingress["FromPort"] == ingress["ToPort"] == 5004
    assert ingress["SourceSecurityGroupId"] == {"Ref": "GatewaySecurityGroup"}
    for process in _INFERENCE:
        env = environment(process.logical_id)
        assert env["SERVING_EXECUTION_ROLE_ARN"] == {"Fn::GetAtt": ["SageMakerServingRole", "Arn"]}
        assert env["SERVING_IMAGE_URI"]["Fn::If"][1:] == [{"Ref": "ServingImageUri"}, {
            "Fn::Sub": "763104351884.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/djl-inference:0.33.0-lmi15.0.0-cu128"}]
        assert "DEPLOY_ON_DEMAND" not in env  # deploying is the user's choice on AWS (it costs money)
        assert env["DYNAMODB_DEPLOYMENTS_TABLE"] == "llm-tuner-inference-deployments"


def test_training_job_names_have_the_prefix_the_policy_allows() -> None:
    from services.training import commands, parts, training_job_request

    assert f'_id("{iam.TRAINING_JOB_NAME_PREFIX}")' in inspect.getsource(commands.create_job)
    assert '"TrainingJobName": job.training_job_name()' in inspect.getsource(training_job_request.training_job_request)
    # A job's later parts (resume, retry) are named after it: the same prefix, within SageMaker's 63 characters.
    job_id = commands._id(iam.TRAINING_JOB_NAME_PREFIX)
    for number in (1, 2, 99):
        name = parts.part_name(job_id, number)
        assert name.startswith(iam.TRAINING_JOB_NAME_PREFIX) and len(name) <= 63 and parts.job_id_of(name) == job_id


def test_the_sagemaker_role_is_the_guides_minus_the_full_access(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["SageMakerExecutionRole"]["Properties"]
    trust = role["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"} and trust["Action"] == "sts:AssumeRole"
    assert "ManagedPolicyArns" not in role  # no AmazonSageMakerFullAccess
    statements = [s for s in role["Policies"][0]["PolicyDocument"]["Statement"] if "Sid" in s]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation",
            "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "ecr:BatchGetImage"} <= actions
    for s in statements:
        if s["Resource"] == "*":
            assert s["Action"] in iam.WILDCARD_REASONS
        elif s["Sid"].startswith("Bucket"):
            assert references(s["Resource"]) == {"Bucket"}


# ---- secrets and containers ------------------------------------------------------------------------------

def test_secrets_come_from_noecho_parameters_or_are_generated_never_literals(cfn: dict[str, Any]) -> None:
    for secret in of_type(cfn, "AWS::SecretsManager::Secret").values():
        if "GenerateSecretString" in secret["Properties"]:  # made by Secrets Manager: the service token
            assert "SecretString" not in secret["Properties"]
            continue
        parameter = secret["Properties"]["SecretString"]["Ref"]
        assert cfn["Parameters"][parameter]["NoEcho"] is True
    auth = cfn["Resources"]["AuthTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {"Name": "JWT_PRIVATE_KEY", "ValueFrom": {"Ref": "JwtSigningKeySecret"}} in auth["Secrets"]
    assert "JWT_PRIVATE_KEY" not in json.dumps(auth["Environment"])


def _settings_env_names(service: str) -> set[str]:
    settings = importlib.import_module(f"services.{service}.settings").Settings
    return {(f.alias or name).upper() for name, f in settings.model_fields.items()}


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_each_container_sets_only_names_its_settings_read(cfn: dict[str, Any], process: Process) -> None:
    container = cfn["Resources"][process.logical_id + "TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    entries = [e.get("Fn::If", [None, e])[1] for e in container["Environment"] + container["Secrets"]]
    names = {e["Name"] for e in entries}
    known = _settings_env_names(process.service) | {"PORT", "HOST"}  # shared/runner.py reads those two
    assert names <= known, names - known
    local_names = {t.name for t in resources.describe().tables} | {q.name for q in resources.describe().queues}
    settings = importlib.import_module(f"services.{process.service}.settings").Settings
    for name, field in settings.model_fields.items():
        if field.default in local_names:  # every table/queue setting points at the deployed resource
            assert (field.alias or name).upper() in names


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_each_process_runs_as_non_root_with_a_health_check_and_logs(cfn: dict[str, Any], process: Process) -> None:
    task = cfn["Resources"][process.logical_id + "TaskDefinition"]["Properties"]
    container = task["ContainerDefinitions"][0]
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"
    assert container["User"] == template.CONTAINER_USER != "0"
    assert container["Command"] == ["python", "-m", process.module]
    assert container["HealthCheck"]["Command"] == template.HEALTHCHECK
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert container["ReadonlyRootFilesystem"] is True
    assert task["TaskRoleArn"] == {"Fn::GetAtt": [process.logical_id + "TaskRole", "Arn"]}
    service = cfn["Resources"][process.logical_id + "Service"]["Properties"]
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert ("LoadBalancers" in service) == process.public


def test_apis_scale_on_cpu_and_workers_on_their_own_queue(cfn: dict[str, Any]) -> None:
    for process in PROCESSES:
        policies = [r["Properties"] for r in of_type(cfn, "AWS::ApplicationAutoScaling::ScalingPolicy").values()
                    if r["Properties"]["ScalingTargetId"] == {"Ref": process.logical_id + "ScalableTarget"}]
        if process.kind == "api":
            assert [p["TargetTrackingScalingPolicyConfiguration"]["PredefinedMetricSpecification"]
                    ["PredefinedMetricType"] for p in policies] == ["ECSServiceAverageCPUUtilization"]
        elif process.kind == "worker":
            alarm = cfn["Resources"][process.logical_id + "BacklogAlarm"]["Properties"]
            assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
            queue_id = alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
            assert _owner_of(cfn, queue_id) == ("AWS::SQS::Queue", process.service)
            assert alarm["AlarmActions"] == [{"Ref": process.logical_id + "ScaleOut"}]
            assert {p["PolicyType"] for p in policies} == {"StepScaling"}
        else:
            assert policies == [] and process.logical_id + "ScalableTarget" not in cfn["Resources"]


def test_https_at_the_load_balancer_and_http_only_redirects(cfn: dict[str, Any]) -> None:
    https = cfn["Resources"]["HttpsListener"]["Properties"]
    assert https["Protocol"] == "HTTPS" and https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    http = cfn["Resources"]["HttpRedirectListener"]["Properties"]
    assert http["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    assert len(of_type(cfn, "AWS::ElasticLoadBalancingV2::TargetGroup")) == 1  # the gateway's, nobody else's


def test_the_sagemaker_cost_alarm_watches_billing_in_either_template(cfn: dict[str, Any]) -> None:
    for built in (cfn, stack_parameters.billing_template()):
        alarm = built["Resources"]["SageMakerCostAlarm"]["Properties"]
        assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/Billing", "EstimatedCharges")
        assert {"Name": "ServiceName", "Value": "AmazonSageMaker"} in alarm["Dimensions"]
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert built["Resources"]["AlarmEmailSubscription"]["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert cfn["Resources"]["SageMakerCostAlarm"]["Condition"] == "BillingMetricsHere"


# ---- images, health check, deploy plan -------------------------------------------------------------------

def test_the_image_plan_builds_and_pushes_every_service_and_the_trainer() -> None:
    commands = images.docker_commands("123456789012", "eu-west-1", "llm-tuner", "abc")
    host = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert commands[0] == ["docker", "login", "--username", "AWS", "--password-stdin", host]
    pushed = [c[2] for c in commands if c[:2] == ["docker", "push"]]
    assert pushed == [f"{host}/llm-tuner/{name}:abc" for name in (*SERVICES, "trainer")]
    training = next(c for c in commands if c[:2] == ["docker", "build"] and "SERVICE=training" in c)
    assert training[-1] == "." and "PORT=5003" in training and "linux/amd64" in training


def test_push_dry_run_prints_each_command_and_runs_nothing() -> None:
    said: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a dry run ran a command")

    images.push("123456789012", "eu-west-1", "llm-tuner", "abc", dry_run=True, say=said.append, run=refuse)
    assert sum(line.startswith("would run: docker push") for line in said) == len(SERVICES) + 1
    assert not any("password" in line and "stdin" not in line for line in said)


def test_the_service_dockerfile_is_slim_non_root_and_health_checked() -> None:
    dockerfile = (ROOT / images.SERVICE_DOCKERFILE).read_text()
    assert "FROM python:3.11-slim" in dockerfile and "requirements/services.txt" in dockerfile
    assert f"USER {template.CONTAINER_USER}" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "deploy/docker/healthcheck.py" in dockerfile


def test_a_worker_is_healthy_while_its_process_runs() -> None:
    args = ["python", "-m", "services.files.worker"]
    assert healthcheck.worker_healthy(args, "S") and healthcheck.worker_healthy(args, "R")
    assert not healthcheck.worker_healthy(args, "Z")
    assert not healthcheck.worker_healthy(["sh"], "S")
    assert not healthcheck.api_healthy(port=1, timeout_s=0.5)  # nothing listens there


def test_deploy_dry_run_prints_every_step_and_calls_no_aws(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deploy, "Aws", lambda *a, **k: pytest.fail("a dry run made an AWS client"))
    deploy.main(["deploy", "--dry-run", "--config", str(EXAMPLE_CONFIG), "--tag", "abc"])
    out = capsys.readouterr().out
    for step in ("1. account 123456789012, region eu-west-1", "2. images", "3. template", "4. stack llm-tuner",
                 "5. cost alarm", "6. outputs", "make doctor"):
        assert step in out
    assert "JwtPrivateKeyPem=<secret>" in out and "BEGIN PRIVATE KEY" not in out
    assert "ServingImageUri=763104351884.dkr.ecr.eu-west-1.amazonaws.com/djl-inference:" in out
    deploy.main(["teardown", "--dry-run", "--config", str(EXAMPLE_CONFIG)])
    out = capsys.readouterr().out
    assert "would delete stack llm-tuner in eu-west-1" in out and "kept by the stack" in out
    assert "would list the SageMaker endpoints named llmt-*" in out  # deployments are not the stack's


def test_the_config_names_what_is_missing_and_the_environment_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('account_id = "1"\nregion = "us-east-1"\n')
    with pytest.raises(deploy.DeployError, match="lacks domain, certificate_arn"):
        deploy.load_config(path, {})
    config = deploy.load_config(EXAMPLE_CONFIG, {"DEPLOY_REGION": "us-west-2", "DEPLOY_PUBLIC_SUBNET_IDS": "a,b"})
    assert config.region == "us-west-2" and config.public_subnet_ids == ("a", "b")
    assert config.account_id == "123456789012"


def test_the_serving_image_is_lmi_in_the_region_unless_configured_and_is_an_ecr_image_there() -> None:
    def shown(config: deploy.Config) -> dict[str, Any]:
        params = deploy.parameters(config, "t", exists=False, log_groups_present=set(), env={}, dry_run=True)
        return {p["ParameterKey"]: p["ParameterValue"] for p in params}

    lmi = shown(deploy.load_config(EXAMPLE_CONFIG, {}))
    assert lmi["ServingImageUri"] == images.lmi_image().in_region("eu-west-1").uri
    assert lmi["ServingImageRepositoryArn"] == "arn:aws:ecr:eu-west-1:763104351884:repository/djl-inference"
    own = shown(deploy.load_config(EXAMPLE_CONFIG, {
        "DEPLOY_SERVING_IMAGE_URI": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/lmi@sha256:abc"}))
    assert own["ServingImageRepositoryArn"] == "arn:aws:ecr:eu-west-1:123456789012:repository/team/lmi"
    for elsewhere in ("docker.io/library/vllm:latest", "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:1"):
        with pytest.raises(deploy.DeployError, match="serving_image_uri"):
            deploy.load_config(EXAMPLE_CONFIG, {"DEPLOY_SERVING_IMAGE_URI": elsewhere})
