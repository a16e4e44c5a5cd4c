"""The deployment's security (deploy/aws): every role on its prefixes of the bucket only, topics encrypted with a
key whose publishers may use it, a security group per process that lets through only the calls the code makes,
and the service token every task gets. No AWS, no network."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy.aws import bucket_access, iam, messaging_key, network, template
from deploy.aws.processes import PROCESSES, Process, api_of
from shared.contracts import resources
from tests.unit.test_cfn_template import import_closure, of_type, references


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    return template.build()


def _statements(cfn: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every identity policy's statements, by role, and the bucket policy's."""
    found = {k: [s for p in r["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"] if "Sid" in s]
             for k, r in of_type(cfn, "AWS::IAM::Role").items()}
    found["BucketPolicy"] = cfn["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _object_prefixes(resource: Any) -> str | None:
    """`prefix/*` of a `{"Fn::Join": ["", [<bucket arn>, "/prefix/*"]]}`, None for anything else."""
    if isinstance(resource, dict) and references(resource) == {"Bucket"} and "Fn::Join" in resource:
        return str(resource["Fn::Join"][1][1]).removeprefix("/")
    return None


# ---- the bucket: prefixes only --------------------------------------------------------------------------

def test_no_role_and_no_bucket_policy_grant_reaches_every_object_of_the_bucket(cfn: dict[str, Any]) -> None:
    checked = 0
    for owner, statements in _statements(cfn).items():
        for statement in statements:
            if statement["Effect"] != "Allow":
                continue  # the bucket policy's deny of plain HTTP covers everything, as it should
            for resource in _listed(statement["Resource"]):
                pattern = _object_prefixes(resource)
                if pattern is None:
                    continue
                checked += 1
                assert pattern not in ("*", "/*") and pattern.split("/")[0], (owner, statement["Sid"])
            if any(a in ("s3:ListBucket", "s3:ListBucketVersions") for a in _listed(statement["Action"])):
                assert statement["Condition"]["StringLike"]["s3:prefix"], (owner, statement["Sid"])
    assert checked > 10  # the scan saw the grants it must (a test that can fail)


@pytest.mark.parametrize("process", [p for p in PROCESSES if iam.granted_actions(p.name) & {"s3:GetObject",
                                                                                          "s3:PutObject"}],
                         ids=lambda p: p.name)
def test_each_process_touches_exactly_its_prefixes(cfn: dict[str, Any], process: Process) -> None:
    role = cfn["Resources"][process.logical_id + "TaskRole"]["Properties"]
    statements = {s["Sid"]: s for s in role["Policies"][0]["PolicyDocument"]["Statement"]}
    prefixes = bucket_access.BUCKET_PREFIXES[process.name]
    assert {_object_prefixes(r) for r in statements["OwnObjects"]["Resource"]} == {p + "*" for p in prefixes.owns}
    if prefixes.reads:
        reads = statements["ReadOthersObjects"]
        assert reads["Action"] == ["s3:GetObject"]
        assert {_object_prefixes(r) for r in reads["Resource"]} == {p + "*" for p in prefixes.reads}
    if prefixes.writes:
        writes = statements["WriteToOthersPrefixes"]
        assert writes["Action"] == ["s3:PutObject"]  # adds objects there; never reads or deletes them
        assert {_object_prefixes(r) for r in writes["Resource"]} == {p + "*" for p in prefixes.writes}
    if "BucketListing" in statements:
        assert statements["BucketListing"]["Condition"] == {
            "StringLike": {"s3:prefix": [p + "*" for p in prefixes.owns]}}


def test_the_prefixes_are_where_the_code_puts_its_objects() -> None:
    from services.files import object_keys
    from services.inference import evaluations
    from services.training import model_deletion, results_file, training_job_request, user_deletion

    files = bucket_access.BUCKET_PREFIXES["files"].owns
    for key in (object_keys.object_key("u", "f"), object_keys.normalized_key("u", "f"),
                object_keys.report_key("u", "f"), *object_keys.user_prefixes("u")):
        assert key.startswith(files)

    class RecordingS3:
        keys: list[str] = []

        async def put_object(self, **kwargs: Any) -> dict[str, Any]:
            self.keys.append(kwargs["Key"])
            return {}

    s3 = RecordingS3()
    asyncio.run(results_file.write_results(s3, "bucket", "u", "ftjob-1", None))  # type: ignore[arg-type]
    assert s3.keys and s3.keys[0].startswith(bucket_access.BUCKET_PREFIXES["training-worker"].writes)
    jobs = bucket_access.TRAINING_JOBS
    assert training_job_request.merged_model_key("u", "j").startswith(jobs)
    assert training_job_request.checkpoint_uri("b", "u", "j").startswith(f"s3://b/{jobs}")
    for module in (user_deletion, model_deletion):
        assert f'f"{jobs}{{' in inspect.getsource(module)
    assert f'key = f"{bucket_access.EVALUATIONS}{{' in inspect.getsource(evaluations.run_evaluation)


_KEY_PREFIX = re.compile(r"^(?:s3://)?/?([a-z][a-z0-9-]*/)")
_SCRIPT_MODE_ONLY = "code/"  # the trainer's source bundle: LAUNCH_MODE=script, never on AWS (bucket_access)


@pytest.mark.parametrize("process", [p for p in PROCESSES if p.name in bucket_access.BUCKET_PREFIXES],
                         ids=lambda p: p.name)
def test_every_key_prefix_a_process_code_names_is_one_it_may_use(process: Process) -> None:
    """The key layouts the code spells (`f"files/{user}/..."`, `f"s3://{bucket}/training-jobs/..."`) against
    the process's prefixes: a new prefix in the code fails here instead of with AccessDenied on AWS."""
    known = {bucket_access.FILES, bucket_access.NORMALIZED, bucket_access.REPORTS, bucket_access.TRAINING_JOBS,
             bucket_access.BASE_MODELS, bucket_access.EVALUATIONS, _SCRIPT_MODE_ONLY}
    named: set[str] = set()
    for path in import_closure(process.module):
        for node in ast.walk(ast.parse(path.read_text())):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant)] \
                if isinstance(node, ast.JoinedStr) else [node.value] if isinstance(node, ast.Constant) else []
            named |= {m.group(1) for part in parts if isinstance(part, str) and (m := _KEY_PREFIX.match(part))
                      and m.group(1) in known}
    prefixes = bucket_access.BUCKET_PREFIXES[process.name]
    assert named - {_SCRIPT_MODE_ONLY} <= {*prefixes.owns, *prefixes.reads, *prefixes.writes}
    if process.name != "inference-reconciler":  # which writes nothing in the bucket
        assert named, "the scan found none of the keys this process builds"


def test_training_jobs_read_their_inputs_and_write_only_under_training_jobs(cfn: dict[str, Any]) -> None:
    role = cfn["Resources"]["SageMakerExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    statements = {s["Sid"]: s for s in role if "Sid" in s}
    assert {_object_prefixes(r) for r in statements["BucketInputs"]["Resource"]} == {"normalized/*", "base-models/*"}
    assert statements["BucketInputs"]["Action"] == "s3:GetObject"
    assert {_object_prefixes(r) for r in statements["BucketOutputs"]["Resource"]} == {"training-jobs/*"}
    policy = {s["Sid"]: s for s in cfn["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    assert policy["AllowSageMakerObjects"]["Resource"] == statements["BucketOutputs"]["Resource"]
    assert policy["AllowSageMakerReads"]["Resource"] == statements["BucketInputs"]["Resource"]


def test_a_bucket_grant_without_a_prefix_is_refused() -> None:
    refs = iam.Refs(table_arn=str, queue_arn=str, topic_arn=str, bucket_arn="arn:bucket", sagemaker_role_arn="",
                    serving_role_arn="", messaging_key_arn="", sub=str)
    with pytest.raises(ValueError, match="prefix"):
        refs.objects("")


# ---- topics: encrypted with the messaging key ----------------------------------------------------------

def test_every_topic_is_encrypted_with_the_rotating_messaging_key(cfn: dict[str, Any]) -> None:
    topics = of_type(cfn, "AWS::SNS::Topic")
    assert len(topics) == len(resources.describe().topics) + 1  # and the alarm topic
    for topic in topics.values():
        assert topic["Properties"]["KmsMasterKeyId"] == {"Ref": messaging_key.LOGICAL_ID}
    key = cfn["Resources"][messaging_key.LOGICAL_ID]["Properties"]
    assert key["EnableKeyRotation"] is True
    statements = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    account = statements.pop("AccountIamPolicies")
    assert account["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    for statement in statements.values():  # AWS services: only to make and read data keys, only for this account
        assert set(statement["Action"]) <= {"kms:Decrypt", "kms:GenerateDataKey*"}
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "cloudwatch.amazonaws.com" in statements["AwsServicesPublishToEncryptedTopics"]["Principal"]["Service"]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_publishers_and_only_they_may_use_the_key(cfn: dict[str, Any], process: Process) -> None:
    statements = cfn["Resources"][process.logical_id + "TaskRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]
    kms = [s for s in statements if any(a.startswith("kms:") for a in s["Action"])]
    if "sns:Publish" not in iam.CALLS[process.name]:
        assert kms == []
        return
    assert kms == [{"Sid": "EncryptMessages", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                    "Resource": [{"Fn::GetAtt": [messaging_key.LOGICAL_ID, "Arn"]}]}]


def test_a_topic_nobody_subscribes_to_is_encrypted_and_its_owner_publishes_to_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN a topic of auth's that no queue subscribes to (security alerts: people subscribe by email) WHEN the
    template is built THEN it is encrypted, auth may publish to it, and nothing else is needed for it."""
    described = resources.describe()
    name = f"{resources.PREFIX}-extra-alerts"
    grown = replace(described, topics=(*described.topics, resources.Topic(name, "auth")))
    monkeypatch.setattr(resources, "describe", lambda *args, **kwargs: grown)
    built = template.build()
    topic_id = template.camel(name) + "Topic"
    assert built["Resources"][topic_id]["Properties"]["KmsMasterKeyId"] == {"Ref": messaging_key.LOGICAL_ID}
    auth = {s["Sid"]: s for s in built["Resources"]["AuthTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]}
    assert {"Ref": topic_id} in auth["PublishOwnTopic"]["Resource"]
    assert not [s for s in of_type(built, "AWS::SNS::Subscription").values()
                if s["Properties"]["TopicArn"] == {"Ref": topic_id}]


# ---- the network ---------------------------------------------------------------------------------------

def _rules(cfn: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in of_type(cfn, type_).values()]


def test_the_load_balancer_reaches_only_the_gateway(cfn: dict[str, Any]) -> None:
    group = cfn["Resources"][network.LOAD_BALANCER_GROUP]["Properties"]
    assert group["SecurityGroupEgress"] == [{"IpProtocol": "tcp", "FromPort": 5000, "ToPort": 5000,
                                             "DestinationSecurityGroupId": {"Ref": "GatewaySecurityGroup"},
                                             "Description": "the gateway's tasks"}]
    from_balancer = [r for r in _rules(cfn, "AWS::EC2::SecurityGroupIngress")
                     if r["SourceSecurityGroupId"] == {"Ref": network.LOAD_BALANCER_GROUP}]
    assert [r["GroupId"] for r in from_balancer] == [{"Ref": "GatewaySecurityGroup"}]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_each_process_accepts_only_its_callers_and_reaches_only_its_callees(
        cfn: dict[str, Any], process: Process) -> None:
    group = {"Ref": network.group_of(process)}
    service = cfn["Resources"][process.logical_id + "Service"]["Properties"]
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"] == [group]
    assert cfn["Resources"][network.group_of(process)]["Properties"]["SecurityGroupEgress"] == [network.HTTPS_OUT]
    ingress = [r for r in _rules(cfn, "AWS::EC2::SecurityGroupIngress") if r["GroupId"] == group]
    callers = {p.logical_id for p in PROCESSES if process.kind == "api" and process.service in p.calls}
    sources = {r["SourceSecurityGroupId"]["Ref"] for r in ingress}
    expected = {f"{c}SecurityGroup" for c in callers} | ({network.LOAD_BALANCER_GROUP} if process.public else set())
    assert sources == expected
    for rule in ingress:
        assert rule["FromPort"] == rule["ToPort"] == process.port and "CidrIp" not in rule
    if process.kind != "api":
        assert ingress == []  # workers and reconcilers accept nothing
    egress = [r for r in _rules(cfn, "AWS::EC2::SecurityGroupEgress") if r["GroupId"] == group]
    assert {(r["DestinationSecurityGroupId"]["Ref"], r["FromPort"]) for r in egress} == {
        (network.group_of(api_of(s)), api_of(s).port) for s in process.calls}


def _local_url_services() -> dict[str, str]:
    """Settings fields whose default is an internal API's local URL -> that service (by its port)."""
    import importlib

    by_port = {str(p.port): p.service for p in PROCESSES if p.kind == "api" and not p.public}
    fields: dict[str, str] = {}
    for service in {p.service for p in PROCESSES}:
        settings = importlib.import_module(f"services.{service}.settings").Settings
        for name, field in settings.model_fields.items():
            match = re.match(r"^https?://(?:127\.0\.0\.1|localhost):(\d+)", str(field.default))
            if match and match.group(1) in by_port:
                fields[name] = by_port[match.group(1)]
    return fields


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_the_calls_each_process_may_make_are_the_urls_its_code_reads_and_its_task_sets(
        cfn: dict[str, Any], process: Process) -> None:
    """`Process.calls` against the code and the task: a process calls a service when the modules it imports read a
    setting named like that service's URL (`settings.files_url`, `settings.auth_jwks_url`) and its container
    points it at that service's internal address; its own service is no call."""
    urls = _local_url_services()
    assert {"auth_url", "auth_jwks_url", "files_url", "inference_url"} <= set(urls)
    read: set[str] = set()
    for path in import_closure(process.module):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in urls:
                read.add(urls[node.attr])
    container = cfn["Resources"][process.logical_id + "TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    environment = json.dumps(container["Environment"])
    pointed = {p.service for p in PROCESSES if p.kind == "api" and f"//{p.name}.{resources.PREFIX}.internal:{p.port}"
               in environment}
    assert (read & pointed) - {process.service} == set(process.calls)


# ---- the service token ---------------------------------------------------------------------------------

@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.name)
def test_every_task_gets_the_generated_service_token_as_a_secret(cfn: dict[str, Any], process: Process) -> None:
    secret = cfn["Resources"][template.SERVICE_TOKEN_SECRET]["Properties"]
    assert secret["GenerateSecretString"]["PasswordLength"] >= 48 and "SecretString" not in secret
    container = cfn["Resources"][process.logical_id + "TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {"Name": "SERVICE_TOKEN", "ValueFrom": {"Ref": template.SERVICE_TOKEN_SECRET}} in container["Secrets"]
    assert "SERVICE_TOKEN" not in json.dumps(container["Environment"])
    execution = cfn["Resources"]["TaskExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    readable = next(s for s in execution if s["Sid"] == "ContainerSecrets")["Resource"]
    assert {"Ref": template.SERVICE_TOKEN_SECRET} in readable


def test_security_alerts_are_encrypted_auths_to_publish_and_go_by_email_when_asked(cfn: dict[str, Any]) -> None:
    topic_id = template.camel(resources.SECURITY_TOPIC) + "Topic"
    assert cfn["Resources"][topic_id]["Properties"]["KmsMasterKeyId"] == {"Ref": messaging_key.LOGICAL_ID}
    auth = {s["Sid"]: s for s in cfn["Resources"]["AuthTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]}
    assert {"Ref": topic_id} in auth["PublishOwnTopic"]["Resource"]
    subscriptions = [r for r in of_type(cfn, "AWS::SNS::Subscription").values()
                     if r["Properties"]["TopicArn"] == {"Ref": topic_id}]
    assert [(s["Properties"]["Protocol"], s["Condition"]) for s in subscriptions] == [
        ("email", "HasSecurityAlertEmail")]  # no queue: people read these
    assert cfn["Parameters"]["SecurityAlertEmail"]["Default"] == ""
    assert cfn["Outputs"]["SecurityAlertsTopicArn"] == {"Value": {"Ref": topic_id}}


def test_make_deploy_passes_the_security_alert_email_when_configured_and_an_empty_one_otherwise() -> None:
    from deploy.aws import deploy

    example = Path(__file__).resolve().parents[2] / "deploy/aws/config.example.toml"

    def given(env: dict[str, str]) -> str:
        config = deploy.load_config(example, env)
        params = deploy.parameters(config, "t", exists=False, log_groups_present=set(), env={}, dry_run=True)
        return next(p["ParameterValue"] for p in params if p["ParameterKey"] == "SecurityAlertEmail")

    assert given({}) == ""  # nobody subscribed: the stack's condition leaves the subscription out
    assert given({"DEPLOY_SECURITY_ALERT_EMAIL": "sec@example.com"}) == "sec@example.com"
