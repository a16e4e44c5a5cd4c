"""The setup doctor's pure parts and the checks no local AWS can answer (IAM's policy simulator, Service
Quotas), against small fakes; the checks against the emulated AWS are in tests/integration/test_doctor.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from deploy.doctor import report
from deploy.doctor.__main__ import _use_local_cluster
from deploy.doctor.checks import config, messaging, sagemaker, tables
from deploy.doctor.context import Context, apply_local_cluster_env, load_context
from deploy.doctor.model import Check, Status, failed, passed
from deploy.doctor.runner import Probe, run_all
from shared.contracts import resources

ROLE_ARN = "arn:aws:iam::123456789012:role/llm-tuner-sagemaker"


class FakeClient:
    """An aiobotocore-like client: each named operation answers from `answers` (a value, or a callable)."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, operation: str) -> Any:
        if operation not in self.answers:
            raise AttributeError(operation)

        async def call(**kwargs: Any) -> Any:
            self.calls.append((operation, kwargs))
            answer = self.answers[operation]
            return answer(**kwargs) if callable(answer) else answer

        return call


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch) -> Context:
    for name in ("ENVIRONMENT", "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "JWT_PRIVATE_KEY", "BASE_URL",
                 "SAGEMAKER_EXECUTION_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    return load_context()


def with_clients(ctx: Context, **clients: FakeClient) -> Context:
    async def client(service: str) -> Any:
        return clients[service]

    ctx.client = client  # type: ignore[method-assign]
    return ctx


# ---- runner and reports ---------------------------------------------------------------------------------

async def test_a_check_that_raises_or_hangs_fails_alone_and_the_others_still_run(ctx: Context) -> None:
    async def ok(_: Context) -> Check:
        return passed("ok", "fine")

    async def broken(_: Context) -> Check:
        raise RuntimeError("boom")

    async def hangs(_: Context) -> Check:
        await asyncio.Event().wait()  # never set: only the timeout ends it
        raise AssertionError("unreachable")

    checks = await run_all(ctx, [Probe("broken", broken), Probe("hangs", hangs), Probe("ok", ok)], timeout_s=0.2)

    assert [(c.name, c.status) for c in checks] == [
        ("broken", Status.FAIL), ("hangs", Status.FAIL), ("ok", Status.PASS)]
    assert "boom" in checks[0].detail and checks[0].fix
    assert "no answer within 0.2 s" in checks[1].detail


def test_reports_say_what_failed_and_how_to_fix_it() -> None:
    checks = [passed("credentials", "account 1"), failed("bucket.versioning", "versioning is Suspended", "put it")]

    text = report.text(checks)
    body = json.loads(report.as_json(checks, {"environment": "production"}))

    assert "PASS  credentials" in text and "FAIL  bucket.versioning" in text and "fix: put it" in text
    assert "2 checks: 1 passed, 1 failed" in text
    assert body["ok"] is False and body["summary"]["fail"] == 1
    assert body["checks"][1] == {"name": "bucket.versioning", "status": "FAIL", "detail": "versioning is Suspended",
                                 "fix": "put it"}
    assert report.failed_any(checks) and not report.failed_any(checks[:1])


# ---- where it looks ---------------------------------------------------------------------------------------

def test_resource_names_follow_the_services_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNAMODB_USERS_TABLE", "team-users")
    monkeypatch.setenv("S3_BUCKET_NAME", "team-bucket")
    monkeypatch.setenv("TRAINING_WORK_QUEUE", "team-training")

    ctx = load_context()

    assert ctx.name(resources.USERS_TABLE) == "team-users"
    assert ctx.name(resources.BUCKET) == "team-bucket"
    assert ctx.name(resources.TRAINING_QUEUE) == "team-training"
    assert ctx.name(resources.FILES_TABLE) == resources.FILES_TABLE


def test_local_flag_points_at_the_cluster_make_up_runs() -> None:
    environ = {"AWS_PROFILE": "work", "AWS_SESSION_TOKEN": "real"}

    apply_local_cluster_env(environ)

    assert environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert environ["AWS_ENDPOINT_URL_SAGEMAKER"] == "http://127.0.0.1:4567"
    assert "AWS_PROFILE" not in environ and "AWS_SESSION_TOKEN" not in environ


def test_development_without_an_endpoint_defaults_to_the_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "development")
    assert _use_local_cluster(None) is True
    assert _use_local_cluster(False) is False
    monkeypatch.setenv("ENVIRONMENT", "production")
    assert _use_local_cluster(None) is False
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert _use_local_cluster(None) is False


# ---- comparisons ------------------------------------------------------------------------------------------

def test_a_table_description_is_compared_with_deploy_resources() -> None:
    expected = resources.describe().table(resources.SESSIONS_TABLE)
    good = {"KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "session_id", "AttributeType": "S"},
                                     {"AttributeName": "user_id", "AttributeType": "S"}],
            "GlobalSecondaryIndexes": [{"IndexName": "user-index",
                                        "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}]}]}
    enabled = {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

    assert tables.table_problems(expected, good, enabled) == []
    assert tables.table_problems(expected, {**good, "GlobalSecondaryIndexes": []}, enabled) == [
        "GSI user-index missing"]
    assert tables.table_problems(expected, good, {"TimeToLiveStatus": "DISABLED"}) == [
        "TTL is DISABLED on no attribute, expected ENABLED on expires_at"]


def test_a_subscription_needs_its_filter_policy_and_raw_delivery() -> None:
    sub = resources.describe().subscriptions[0]
    policy = json.dumps({"type": list(reversed(sub.event_types))})

    assert messaging.subscription_problems(sub, {"FilterPolicy": policy, "RawMessageDelivery": "true"}) == []
    problems = messaging.subscription_problems(sub, {"RawMessageDelivery": "false"})
    assert problems[0].startswith("no filter policy") and problems[1].startswith("raw message delivery is false")


def test_trust_policies_must_let_sagemaker_assume_the_role() -> None:
    assert sagemaker.trusts_sagemaker(sagemaker.TRUST_POLICY)
    assert sagemaker.trusts_sagemaker("%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A"
                                      "%7B%22Service%22%3A%5B%22sagemaker.amazonaws.com%22%5D%7D%2C%22Action%22"
                                      "%3A%22sts%3AAssumeRole%22%7D%5D%7D")
    other = json.loads(json.dumps(sagemaker.TRUST_POLICY).replace("sagemaker.amazonaws.com", "ec2.amazonaws.com"))
    assert not sagemaker.trusts_sagemaker(other)


# ---- the caller may pass the role: IAM's policy simulator (moto has none) ------------------------------------

def _simulating(decision: str) -> FakeClient:
    return FakeClient(simulate_principal_policy={"EvaluationResults": [
        {"EvalActionName": "iam:PassRole", "EvalDecision": decision}]})


async def test_passrole_passes_when_iam_simulates_allowed(ctx: Context) -> None:
    ctx._identity = {"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:user/deployer"}
    iam = _simulating("allowed")

    check = await sagemaker._pass_role(with_clients(ctx, iam=iam), ROLE_ARN)

    assert check.status is Status.PASS
    assert iam.calls[0][1]["PolicySourceArn"] == "arn:aws:iam::123456789012:user/deployer"
    assert iam.calls[0][1]["ResourceArns"] == [ROLE_ARN]


async def test_passrole_fails_with_the_policy_to_attach_when_iam_denies(ctx: Context) -> None:
    ctx._identity = {"Account": "123456789012",
                     "Arn": "arn:aws:sts::123456789012:assumed-role/llm-tuner-training/task-1"}
    iam = _simulating("implicitDeny")
    iam.answers["get_role"] = {"Role": {"Arn": "arn:aws:iam::123456789012:role/services/llm-tuner-training"}}

    check = await sagemaker._pass_role(with_clients(ctx, iam=iam), ROLE_ARN)

    assert check.status is Status.FAIL and "implicitDeny" in check.detail
    assert iam.calls[-1][1]["PolicySourceArn"] == "arn:aws:iam::123456789012:role/services/llm-tuner-training"
    assert '"iam:PassRole"' in check.fix and ROLE_ARN in check.fix


# ---- GPU quotas: Service Quotas (moto cannot answer for SageMaker) ------------------------------------------

def _quotas(values: Mapping[str, float]) -> FakeClient:
    codes = {f"{t} for training job usage": f"L-{i:04d}" for i, t in enumerate(values)}
    by_code = {codes[f"{t} for training job usage"]: v for t, v in values.items()}
    listing = {"Quotas": [{"QuotaName": name, "QuotaCode": code} for name, code in codes.items()]}
    return FakeClient(list_service_quotas=listing, list_aws_default_service_quotas={"Quotas": []},
                      get_service_quota=lambda QuotaCode, **_: {"Quota": {"Value": by_code[QuotaCode]}})


GPU_TYPES = ("ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.4xlarge", "ml.p3.2xlarge")


async def test_gpu_quotas_pass_when_every_gpu_type_allows_an_instance(ctx: Context) -> None:
    check = await sagemaker.gpu_quotas(with_clients(ctx, **{"service-quotas": _quotas(dict.fromkeys(GPU_TYPES, 2))}))

    assert check.status is Status.PASS and "ml.g5.xlarge for training job usage: 2" in check.detail


async def test_gpu_quotas_fail_when_every_gpu_type_is_at_zero(ctx: Context) -> None:
    check = await sagemaker.gpu_quotas(with_clients(ctx, **{"service-quotas": _quotas(dict.fromkeys(GPU_TYPES, 0))}))

    assert check.status is Status.FAIL and "no GPU training is possible" in check.detail
    assert "request-service-quota-increase --service-code sagemaker --quota-code L-0000" in check.fix


async def test_gpu_quotas_warn_when_some_gpu_types_are_at_zero(ctx: Context) -> None:
    values = {**dict.fromkeys(GPU_TYPES, 0), "ml.g5.xlarge": 1}

    check = await sagemaker.gpu_quotas(with_clients(ctx, **{"service-quotas": _quotas(values)}))

    assert check.status is Status.WARN and "3 GPU quota(s) at 0" in check.detail


# ---- Google and secrets -------------------------------------------------------------------------------------

def test_base_url_must_be_an_address_google_accepts() -> None:
    assert config.base_url_problem("http://localhost:5000", development=False) is None
    assert config.base_url_problem("https://tuner.example.com", development=False) is None
    assert "http" in str(config.base_url_problem("http://tuner.example.com", development=False))
    assert "not an absolute" in str(config.base_url_problem("tuner.example.com", development=True))


def test_google_authorization_errors_are_read_from_the_page_or_the_error_redirect() -> None:
    auth_error = base64.urlsafe_b64encode(b"\n\x15redirect_uri_mismatch\x12\x04oops").decode().rstrip("=")

    assert config.authorization_error(400, "", "Error 400: redirect_uri_mismatch") == "redirect_uri_mismatch"
    assert config.authorization_error(
        302, f"https://accounts.google.com/signin/oauth/error/v2?authError={auth_error}&client_id=x", "") \
        == "redirect_uri_mismatch"
    assert config.authorization_error(401, "", "Error 401: invalid_client") == "invalid_client"
    assert config.authorization_error(302, "https://accounts.google.com/v3/signin/identifier?x=1", "") is None


async def test_google_is_skipped_when_not_configured(ctx: Context) -> None:
    [check] = await config.google_oauth(ctx)

    assert check.status is Status.SKIP and "GOOGLE_CLIENT_ID unset" in check.detail


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


async def test_secrets_pass_in_production_when_every_secret_is_real(ctx: Context,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_PRIVATE_KEY", _pem())

    check = await config.secrets(load_context())

    assert check.status is Status.PASS, check.detail
    assert "JWT_PRIVATE_KEY" in check.detail


async def test_secrets_fail_in_production_on_placeholders_and_a_missing_signing_key(
        ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "123.apps.googleusercontent.com")
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "your-google-client-secret")

    check = await config.secrets(load_context())

    assert check.status is Status.FAIL
    assert "GOOGLE_CLIENT_SECRET holds a placeholder" in check.detail
    assert "JWT_PRIVATE_KEY must be set when ENVIRONMENT=production" in check.detail
    assert check.fix


async def test_secrets_are_skipped_in_development(ctx: Context) -> None:
    check = await config.secrets(ctx)

    assert check.status is Status.SKIP and "ENVIRONMENT=development" in check.detail
