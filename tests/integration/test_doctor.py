"""The setup doctor against the emulated AWS: green on the provisioned resources, and red, check by check, on
broken ones. Every broken resource has a name of its own (the doctor is pointed at it through the services'
settings), so the provisioned resources other tests use are never touched."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from deploy.doctor.checks import CHECKS
from deploy.doctor.context import load_context
from deploy.doctor.model import Check, Status
from deploy.doctor.runner import run_and_close
from deploy.local.provision import table_request
from shared.contracts import resources
from shared.contracts.resources import EventRule
from tests.support.aws import ROOT, AwsEndpoint, free_port, start_emulator_process
from tests.support.servers import serve

_ids = itertools.count()

# Settings a developer's shell (or another test) may hold that would change what the doctor looks at.
_OVERRIDES = ("ENVIRONMENT", "BASE_URL", "S3_BUCKET_NAME", "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET",
              "GOOGLE_DISCOVERY_URL", "SAGEMAKER_EXECUTION_ROLE_ARN", "AWS_ENDPOINT_URL_SAGEMAKER",
              "DYNAMODB_USERS_TABLE", "DYNAMODB_SESSIONS_TABLE", "DYNAMODB_FILES_TABLE", "DYNAMODB_JOBS_TABLE",
              "AUTH_EVENTS_TOPIC", "FILES_EVENTS_TOPIC", "FILES_WORK_QUEUE", "TRAINING_WORK_QUEUE")


def unique(kind: str) -> str:
    return f"doctor-{kind}-{os.getpid()}-{next(_ids)}"


@pytest.fixture
def env(provisioned: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The provisioned embedded AWS, with none of the overrides set: each test sets what it breaks."""
    for name in _OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def doctor(*probes: str, rules: tuple[EventRule, ...] | None = None) -> dict[str, Check]:
    ctx = load_context()
    if rules is not None:  # the rule's name is not a setting: point the doctor at other rules directly
        ctx = dataclasses.replace(ctx, resources=dataclasses.replace(ctx.resources, rules=rules))
    checks = await run_and_close(ctx, [p for p in CHECKS if not probes or p.name in probes])
    return {c.name: c for c in checks}


def assert_fails(check: Check, *words: str) -> None:
    assert check.status is Status.FAIL, check
    assert all(w in check.detail for w in words), check.detail
    assert check.fix, "a failed check says how to fix it"


# ---- green ---------------------------------------------------------------------------------------------------

async def test_a_provisioned_local_setup_passes_every_check_it_can_make(env: pytest.MonkeyPatch) -> None:
    checks = await doctor()

    assert not [c for c in checks.values() if c.status is Status.FAIL]
    described = resources.describe()
    must_pass = ["credentials", "bucket", "bucket.versioning", "bucket.encryption", "bucket.public-access",
                 "bucket.cors", "sagemaker",
                 *[f"table:{t.name}" for t in described.tables], *[f"topic:{t.name}" for t in described.topics],
                 *[f"queue:{q.name}" for q in described.queues], *[f"rule:{r.name}" for r in described.rules]]
    assert {name: checks[name].status for name in must_pass} == dict.fromkeys(must_pass, Status.PASS)
    assert [c.status for n, c in checks.items() if n.startswith("subscription:")] == \
        [Status.PASS] * len(described.subscriptions)
    # What the embedded AWS cannot answer, or the development defaults leave out, is skipped, saying why.
    assert checks["gpu-quotas"].status is Status.SKIP and "Service Quotas" in checks["gpu-quotas"].detail
    assert checks["sagemaker-role"].status is Status.SKIP
    assert checks["google-oauth"].status is Status.SKIP
    assert checks["secrets"].status is Status.SKIP


# ---- credentials -----------------------------------------------------------------------------------------------

async def test_an_unreachable_endpoint_fails_the_credentials_check(env: pytest.MonkeyPatch) -> None:
    env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")

    checks = await doctor("credentials")

    assert_fails(checks["credentials"], "cannot reach")


async def test_missing_credentials_fail_the_credentials_check(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        env.delenv(name, raising=False)
    env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    env.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookup off this machine

    checks = await doctor("credentials")

    assert_fails(checks["credentials"], "no AWS credentials")
    assert "aws configure" in checks["credentials"].fix


# ---- bucket ---------------------------------------------------------------------------------------------------

async def test_a_missing_bucket_fails_and_says_how_to_create_it(env: pytest.MonkeyPatch) -> None:
    env.setenv("S3_BUCKET_NAME", name := unique("missing"))

    checks = await doctor("bucket")

    assert list(checks) == ["bucket"]
    assert_fails(checks["bucket"], name, "not found")


async def test_a_bare_bucket_fails_versioning_encryption_public_access_and_cors(env: pytest.MonkeyPatch) -> None:
    boto3.client("s3").create_bucket(Bucket=(name := unique("bare")))
    env.setenv("S3_BUCKET_NAME", name)

    checks = await doctor("bucket")

    assert checks["bucket"].status is Status.PASS
    assert_fails(checks["bucket.versioning"], "never enabled")
    assert_fails(checks["bucket.encryption"], "no default encryption")
    assert_fails(checks["bucket.public-access"], "no public access block")
    assert_fails(checks["bucket.cors"], "does not allow PUT from http://localhost:5000")
    assert "put-bucket-versioning" in checks["bucket.versioning"].fix


async def test_suspended_versioning_fails(env: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=(name := unique("suspended")))
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    env.setenv("S3_BUCKET_NAME", name)

    checks = await doctor("bucket")

    assert_fails(checks["bucket.versioning"], "Suspended")


async def test_cors_fails_when_base_url_is_not_an_allowed_origin(env: pytest.MonkeyPatch) -> None:
    env.setenv("BASE_URL", "https://tuner.example.com")

    checks = await doctor("bucket")

    assert checks["bucket.versioning"].status is Status.PASS
    assert_fails(checks["bucket.cors"], "https://tuner.example.com")


# ---- tables ---------------------------------------------------------------------------------------------------

async def test_tables_fail_on_a_missing_gsi_ttl_key_or_table(env: pytest.MonkeyPatch) -> None:
    db = boto3.client("dynamodb")
    described = resources.describe()
    no_gsi = {**table_request(described.table(resources.USERS_TABLE)), "TableName": unique("users")}
    no_gsi.pop("GlobalSecondaryIndexes")
    no_gsi["AttributeDefinitions"] = [{"AttributeName": "id", "AttributeType": "S"}]
    no_ttl = {**table_request(described.table(resources.SESSIONS_TABLE)), "TableName": unique("sessions")}
    wrong_key = {**table_request(described.table(resources.FILES_TABLE)), "TableName": unique("files")}
    wrong_key["KeySchema"] = [{"AttributeName": "user_id", "KeyType": "HASH"}]
    wrong_key["AttributeDefinitions"] = [{"AttributeName": "user_id", "AttributeType": "S"}]
    for request in (no_gsi, no_ttl, wrong_key):
        db.create_table(**request)
    env.setenv("DYNAMODB_USERS_TABLE", no_gsi["TableName"])
    env.setenv("DYNAMODB_SESSIONS_TABLE", no_ttl["TableName"])
    env.setenv("DYNAMODB_FILES_TABLE", wrong_key["TableName"])
    env.setenv("DYNAMODB_JOBS_TABLE", missing := unique("jobs"))

    checks = await doctor("tables")

    assert_fails(checks[f"table:{resources.USERS_TABLE}"], "GSI email-index missing")
    assert "--global-secondary-index-updates" in checks[f"table:{resources.USERS_TABLE}"].fix
    assert_fails(checks[f"table:{resources.SESSIONS_TABLE}"], "TTL is DISABLED", "expires_at")
    assert "update-time-to-live" in checks[f"table:{resources.SESSIONS_TABLE}"].fix
    assert_fails(checks[f"table:{resources.FILES_TABLE}"], "key schema")
    assert_fails(checks[f"table:{resources.JOBS_TABLE}"], missing, "not found")
    assert checks[f"table:{resources.JOB_EVENTS_TABLE}"].status is Status.PASS


# ---- topics, queues, subscriptions, rules -------------------------------------------------------------------------

async def test_a_missing_topic_fails(env: pytest.MonkeyPatch) -> None:
    env.setenv("FILES_EVENTS_TOPIC", name := unique("topic"))

    checks = await doctor("topics")

    assert_fails(checks[f"topic:{resources.FILES_TOPIC}"], name, "not found")
    assert checks[f"topic:{resources.AUTH_TOPIC}"].status is Status.PASS


async def test_outside_development_an_unencrypted_topic_warns(env: pytest.MonkeyPatch) -> None:
    """Events carry emails: a deployment's topics are encrypted (the stack's KMS key); development's need not be."""
    sns = boto3.client("sns")
    sns.create_topic(Name=(plain := unique("plain-topic")))
    sns.create_topic(Name=(encrypted := unique("encrypted-topic")), Attributes={"KmsMasterKeyId": "alias/test-key"})
    env.setenv("AUTH_EVENTS_TOPIC", plain)
    env.setenv("FILES_EVENTS_TOPIC", encrypted)
    assert (await doctor("topics"))[f"topic:{resources.AUTH_TOPIC}"].status is Status.PASS  # development: fine

    checks = {c.name: c for c in await run_and_close(
        dataclasses.replace(load_context(), environment="production"), [p for p in CHECKS if p.name == "topics"])}

    warning = checks[f"topic:{resources.AUTH_TOPIC}"]
    assert warning.status is Status.WARN and "unencrypted" in warning.detail and "KmsMasterKeyId" in warning.fix
    assert checks[f"topic:{resources.FILES_TOPIC}"].status is Status.PASS


async def test_queues_fail_without_redrive_or_when_missing_and_warn_on_another_receive_count(
        env: pytest.MonkeyPatch) -> None:
    sqs = boto3.client("sqs")
    sqs.create_queue(QueueName=(no_redrive := unique("queue")))
    dlq_url = sqs.create_queue(QueueName=(other := unique("queue")) + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName=other, Attributes={"RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "9"})})
    env.setenv("FILES_WORK_QUEUE", no_redrive)
    env.setenv("TRAINING_WORK_QUEUE", other)

    checks = await doctor("queues")

    assert_fails(checks[f"queue:{resources.FILES_QUEUE}"], "no DLQ redrive")
    assert "RedrivePolicy" in checks[f"queue:{resources.FILES_QUEUE}"].fix
    warning = checks[f"queue:{resources.TRAINING_QUEUE}"]
    assert warning.status is Status.WARN and "after 9 receives" in warning.detail

    env.setenv("FILES_WORK_QUEUE", unique("missing"))
    assert_fails((await doctor("queues"))[f"queue:{resources.FILES_QUEUE}"], "not found")


async def test_subscriptions_fail_without_their_filter_policy_or_when_missing(env: pytest.MonkeyPatch) -> None:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name=(topic := unique("auth-events")))["TopicArn"]
    unfiltered_url = sqs.create_queue(QueueName=(unfiltered := unique("files-worker")))["QueueUrl"]
    unfiltered_arn = sqs.get_queue_attributes(QueueUrl=unfiltered_url,
                                              AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sqs.create_queue(QueueName=(unsubscribed := unique("training-worker")))
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=unfiltered_arn)  # no filter, not raw
    env.setenv("AUTH_EVENTS_TOPIC", topic)
    env.setenv("FILES_WORK_QUEUE", unfiltered)
    env.setenv("TRAINING_WORK_QUEUE", unsubscribed)

    checks = await doctor("subscriptions")

    broken = checks["subscription:auth-events->files-worker"]
    assert_fails(broken, "no filter policy", "raw message delivery is false")
    assert "FilterPolicy --attribute-value '{\"type\": [\"user.deleted\"]}'" in broken.fix
    assert_fails(checks["subscription:auth-events->training-worker"], "is not subscribed")


async def test_rules_fail_on_another_pattern_no_target_or_when_missing(env: pytest.MonkeyPatch) -> None:
    events = boto3.client("events")
    queue_url = boto3.client("sqs").get_queue_url(QueueName=resources.TRAINING_QUEUE)["QueueUrl"]
    queue_arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    wanted = resources.describe().rules[0]
    other_pattern, no_target, missing = (dataclasses.replace(wanted, name=unique("rule")) for _ in range(3))
    events.put_rule(Name=other_pattern.name, EventPattern=json.dumps({"source": ["aws.sagemaker"]}))
    events.put_targets(Rule=other_pattern.name, Targets=[{"Id": "training", "Arn": queue_arn}])
    events.put_rule(Name=no_target.name, EventPattern=json.dumps(wanted.pattern))

    checks = await doctor("rules", rules=(other_pattern, no_target, missing))

    assert_fails(checks[f"rule:{other_pattern.name}"], "matches", "expected")
    assert_fails(checks[f"rule:{no_target.name}"], "does not target", resources.TRAINING_QUEUE)
    assert_fails(checks[f"rule:{missing.name}"], "not found")


# ---- SageMaker ----------------------------------------------------------------------------------------------------

def _role(trusted_service: str) -> str:
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": trusted_service}, "Action": "sts:AssumeRole"}]}
    role = boto3.client("iam").create_role(RoleName=unique("role"), AssumeRolePolicyDocument=json.dumps(trust))
    return str(role["Role"]["Arn"])


async def test_a_role_sagemaker_may_assume_passes(env: pytest.MonkeyPatch) -> None:
    env.setenv("SAGEMAKER_EXECUTION_ROLE_ARN", _role("sagemaker.amazonaws.com"))

    checks = await doctor("sagemaker-role")

    assert checks["sagemaker-role"].status is Status.PASS
    # moto has no policy simulator: whether the caller may pass the role is not known here, and says so.
    passrole = checks["sagemaker-role.passrole"]
    assert passrole.status is Status.SKIP and "cannot simulate" in passrole.detail


async def test_a_role_trusting_another_service_or_missing_fails(env: pytest.MonkeyPatch) -> None:
    env.setenv("SAGEMAKER_EXECUTION_ROLE_ARN", _role("ec2.amazonaws.com"))
    checks = await doctor("sagemaker-role")
    assert_fails(checks["sagemaker-role"], "does not let sagemaker.amazonaws.com assume it")
    assert "update-assume-role-policy" in checks["sagemaker-role"].fix

    env.setenv("SAGEMAKER_EXECUTION_ROLE_ARN", f"arn:aws:iam::123456789012:role/{unique('missing')}")
    assert_fails((await doctor("sagemaker-role"))["sagemaker-role"], "does not exist")

    env.setenv("SAGEMAKER_EXECUTION_ROLE_ARN", "arn:aws:iam::999999999999:role/SageMakerExecutionRole")
    assert_fails((await doctor("sagemaker-role"))["sagemaker-role"], "is in account 999999999999")

    env.setenv("SAGEMAKER_EXECUTION_ROLE_ARN", "SageMakerExecutionRole")
    assert_fails((await doctor("sagemaker-role"))["sagemaker-role"], "is not an IAM role ARN")


async def test_an_unreachable_sagemaker_endpoint_fails(env: pytest.MonkeyPatch) -> None:
    env.setenv("AWS_ENDPOINT_URL_SAGEMAKER", f"http://127.0.0.1:{free_port()}")

    checks = await doctor("sagemaker")

    assert_fails(checks["sagemaker"], "cannot reach")
    assert "make up" in checks["sagemaker"].fix


# ---- Google OAuth: a stand-in for Google's endpoints on localhost -----------------------------------------------

GOOGLE_CLIENT = "1234-doctor.apps.googleusercontent.com"
GOOGLE_SECRET = "GOCSPX-doctor-test-value"
REGISTERED = {"http://localhost:5000/auth/google/callback"}


def fake_google() -> FastAPI:
    """Google's answers as the doctor reads them: the authorization endpoint refuses an unknown client or an
    unregistered redirect URI with an error page, else goes on to sign-in; the token endpoint answers a
    made-up code invalid_grant for the right client secret, invalid_client otherwise."""
    app = FastAPI()

    @app.get("/.well-known/openid-configuration")
    async def discovery(request: Request) -> dict[str, str]:
        base = str(request.base_url).rstrip("/")
        return {"issuer": base, "authorization_endpoint": f"{base}/o/oauth2/v2/auth",
                "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/certs"}

    @app.get("/o/oauth2/v2/auth")
    async def authorize(client_id: str, redirect_uri: str) -> Response:
        if client_id != GOOGLE_CLIENT:
            return HTMLResponse("Error 401: invalid_client", status_code=401)
        if redirect_uri not in REGISTERED:
            return HTMLResponse("Error 400: redirect_uri_mismatch", status_code=400)
        return RedirectResponse("/v3/signin/identifier?flowName=GeneralOAuthFlow", status_code=302)

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = await request.form()
        if form.get("client_id") == GOOGLE_CLIENT and form.get("client_secret") == GOOGLE_SECRET:
            return JSONResponse({"error": "invalid_grant", "error_description": "Malformed auth code."}, 400)
        return JSONResponse({"error": "invalid_client", "error_description": "Unauthorized"}, 401)

    return app


@pytest.fixture(scope="module")
def google_url() -> Iterator[str]:
    with serve(fake_google()) as url:
        yield url


@pytest.fixture
def google(env: pytest.MonkeyPatch, google_url: str) -> pytest.MonkeyPatch:
    env.setenv("GOOGLE_DISCOVERY_URL", f"{google_url}/.well-known/openid-configuration")
    env.setenv("GOOGLE_CLIENT_ID", GOOGLE_CLIENT)
    env.setenv("GOOGLE_CLIENT_SECRET", GOOGLE_SECRET)
    return env


async def test_google_passes_when_the_redirect_uri_is_registered_and_the_secret_is_right(
        google: pytest.MonkeyPatch) -> None:
    checks = await doctor("google-oauth")

    assert checks["google-oauth.redirect-uri"].status is Status.PASS
    assert "http://localhost:5000/auth/google/callback" in checks["google-oauth.redirect-uri"].detail
    assert checks["google-oauth.client-secret"].status is Status.PASS


async def test_google_fails_on_an_unregistered_redirect_uri_and_a_wrong_secret(google: pytest.MonkeyPatch) -> None:
    google.setenv("BASE_URL", "https://tuner.example.com")
    google.setenv("GOOGLE_CLIENT_SECRET", "GOCSPX-another-value")

    checks = await doctor("google-oauth")

    assert_fails(checks["google-oauth.redirect-uri"], "redirect_uri_mismatch",
                 "https://tuner.example.com/auth/google/callback")
    assert "Authorized redirect URIs" in checks["google-oauth.redirect-uri"].fix
    assert_fails(checks["google-oauth.client-secret"], "invalid_client")


async def test_google_fails_on_a_placeholder_secret(google: pytest.MonkeyPatch) -> None:
    google.setenv("GOOGLE_CLIENT_SECRET", "your-google-client-secret")

    checks = await doctor("google-oauth")

    assert_fails(checks["google-oauth.client-secret"], "placeholder")


# ---- the command ----------------------------------------------------------------------------------------------------

def _command_env(aws: AwsEndpoint, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in _OVERRIDES}
    return {**base, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": aws.url, "ENVIRONMENT": "development", **extra}


@pytest.fixture
def emulator(provisioned: dict[str, Any], aws: AwsEndpoint, tmp_path: Path) -> Iterator[str]:
    """The local SageMaker emulator `make up` runs, on a free port."""
    proc, url = start_emulator_process(tmp_path / "jobs", _command_env(aws), tmp_path / "emulator.log")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_command_exits_0_and_prints_pass_lines_on_the_local_setup(aws: AwsEndpoint, emulator: str) -> None:
    done = subprocess.run([sys.executable, "-m", "deploy.doctor"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=_command_env(aws, AWS_ENDPOINT_URL_SAGEMAKER=emulator))

    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("PASS  credentials", "PASS  bucket.versioning", f"PASS  table:{resources.USERS_TABLE}",
                 f"PASS  queue:{resources.TRAINING_QUEUE}", "PASS  sagemaker", "SKIP  gpu-quotas"):
        assert line in done.stdout, done.stdout
    assert f"SageMaker answers ListTrainingJobs at {emulator}" in done.stdout
    assert "FAIL" not in done.stdout


def test_the_command_exits_non_zero_on_a_broken_setup(aws: AwsEndpoint, provisioned: dict[str, Any]) -> None:
    env = _command_env(aws, S3_BUCKET_NAME=unique("missing"), DYNAMODB_USERS_TABLE=unique("missing"))

    done = subprocess.run([sys.executable, "-m", "deploy.doctor", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)

    assert done.returncode == 1, done.stdout + done.stderr
    body = json.loads(done.stdout)
    statuses = {c["name"]: c["status"] for c in body["checks"]}
    assert body["ok"] is False
    assert statuses["bucket"] == "FAIL" and statuses[f"table:{resources.USERS_TABLE}"] == "FAIL"
    assert statuses["credentials"] == "PASS" and statuses[f"table:{resources.FILES_TABLE}"] == "PASS"
