"""SageMaker: the execution role of training jobs and the serving role of endpoints (each assumable by SageMaker,
passable by the caller), the API answering, and the training quotas of the catalog's GPU instance types."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError
from botocore.parsers import ResponseParserError

from deploy.doctor.context import Context
from deploy.doctor.model import Check, Status, failed, passed, skipped, warned
from services.inference.settings import Settings as InferenceSettings
from services.training.catalog import Catalog
from services.training.quotas import SERVICE_CODE, QuotaCheck, QuotaChecker
from services.training.settings import Settings as TrainingSettings

SAGEMAKER_PRINCIPAL = "sagemaker.amazonaws.com"
TRUST_POLICY = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": SAGEMAKER_PRINCIPAL}, "Action": "sts:AssumeRole"}]}
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/(?:.*/)?([\w+=,.@-]+)$")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def trusts_sagemaker(document: Any) -> bool:
    """Whether a trust policy (a dict, or the URL-encoded JSON IAM returns) lets SageMaker assume the role."""
    policy = json.loads(unquote(document)) if isinstance(document, str) else document
    for statement in _as_list(policy.get("Statement", [])):
        actions = {a.lower() for a in _as_list(statement.get("Action", []))}
        principal = statement.get("Principal", {})
        services = _as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
        if statement.get("Effect") == "Allow" and actions & {"sts:assumerole", "sts:*", "*"} \
                and SAGEMAKER_PRINCIPAL in services:
            return True
    return False


def _role_fix(ctx: Context, name: str) -> str:
    return (f"{ctx.aws_cli('iam', f'update-assume-role-policy --role-name {name} --policy-document')} "
            f"'{json.dumps(TRUST_POLICY)}'")


@dataclass(frozen=True)
class _Role:
    """A role the platform hands to SageMaker, as one service's settings name it."""

    check: str  # the check's name
    setting: str  # the variable that names it
    arn: str
    default: str  # the local default, which the local SageMaker emulator never assumes
    runs: str  # what runs as it
    grants: str  # what it needs beyond the trust policy
    passed_by: str  # whose credentials pass it


def _training_role(ctx: Context) -> _Role:
    return _Role("sagemaker-role", "SAGEMAKER_EXECUTION_ROLE_ARN", ctx.training.sagemaker_execution_role_arn,
                 str(TrainingSettings.model_fields["sagemaker_execution_role_arn"].default), "training jobs",
                 "the guide's S3 and logs permissions", "the training service")


def _serving_role(ctx: Context) -> _Role:
    return _Role("serving-role", "SERVING_EXECUTION_ROLE_ARN", ctx.inference.serving_execution_role_arn,
                 str(InferenceSettings.model_fields["serving_execution_role_arn"].default), "endpoints",
                 "read on the bucket's base-models/ and the jobs' model.tar.gz, ECR pull of the serving image and "
                 "logs (deploy/aws/template.py's SageMakerServingRole)", "the inference worker")


async def execution_role(ctx: Context) -> list[Check]:
    return await _role_checks(ctx, _training_role(ctx))


async def serving_role(ctx: Context) -> list[Check]:
    return await _role_checks(ctx, _serving_role(ctx))


async def _role_checks(ctx: Context, wanted: _Role) -> list[Check]:
    arn, check, setting = wanted.arn, wanted.check, wanted.setting
    match = _ROLE_ARN.match(arn)
    if match is None:
        return [failed(check, f"{setting} {arn!r} is not an IAM role ARN",
                       "set it to the role's ARN: `aws iam get-role --role-name <name> --query Role.Arn`")]
    account, name = match.group(1), match.group(2)
    caller_account = str((await ctx.identity())["Account"])
    if account != caller_account:
        return [failed(check, f"role {arn} is in account {account}, but the credentials are for account "
                       f"{caller_account}: SageMaker takes a role of the job's own account",
                       f"set {setting} to a role in this account, or use that account's credentials")]
    iam = await ctx.client("iam")
    try:
        role = (await iam.get_role(RoleName=name))["Role"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchEntity":
            raise
        if ctx.is_development and arn == wanted.default:
            return [skipped(check, f"{setting} is the local default and the local "
                            "SageMaker emulator assumes no role; set it to check a real role")]
        create = ctx.aws_cli("iam", f"create-role --role-name {name} --assume-role-policy-document")
        by_hand = f"`{create} '{json.dumps(TRUST_POLICY)}'`, then attach {wanted.grants}"
        return [failed(check, f"role {name} ({arn}) does not exist",
                       by_hand if ctx.is_development else f"{ctx.provision_fix} (it creates the role); or {by_hand}")]
    if role.get("Arn", arn) != arn:
        return [failed(check, f"role {name} exists as {role['Arn']}, not {arn}", f"set {setting}={role['Arn']}")]
    if not trusts_sagemaker(role.get("AssumeRolePolicyDocument", {})):
        return [failed(check, f"role {name}'s trust policy does not let {SAGEMAKER_PRINCIPAL} assume it: "
                       f"{wanted.runs} fail to start", _role_fix(ctx, name))]
    return [passed(check, f"role {name} exists and {SAGEMAKER_PRINCIPAL} may assume it"),
            await _pass_role(ctx, arn, f"{check}.passrole", wanted.passed_by)]


async def _principal_arn(ctx: Context) -> str | None:
    """The IAM ARN policies can be simulated for: a user's, or an assumed role's role ARN."""
    caller = str((await ctx.identity())["Arn"])
    if ":assumed-role/" in caller:
        role_name = caller.split(":assumed-role/", 1)[1].split("/", 1)[0]
        iam = await ctx.client("iam")
        return str((await iam.get_role(RoleName=role_name))["Role"]["Arn"])
    if caller.endswith(":root"):
        return None
    return caller.replace(":sts::", ":iam::", 1)


async def _pass_role(ctx: Context, role_arn: str, name: str = "sagemaker-role.passrole",
                     passed_by: str = "the training service") -> Check:
    principal = await _principal_arn(ctx)
    if principal is None:
        return warned(name, "the doctor runs as the account's root user, which may pass any role; the services "
                      "must not run as root", f"run the doctor with {passed_by}'s credentials")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "iam:PassRole", "Resource": role_arn,
        "Condition": {"StringEquals": {"iam:PassedToService": SAGEMAKER_PRINCIPAL}}}]}
    iam = await ctx.client("iam")
    try:
        answer = await iam.simulate_principal_policy(
            PolicySourceArn=principal, ActionNames=["iam:PassRole"], ResourceArns=[role_arn],
            ContextEntries=[{"ContextKeyName": "iam:PassedToService", "ContextKeyType": "string",
                             "ContextKeyValues": [SAGEMAKER_PRINCIPAL]}])
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        why = (f"the caller may not simulate policies ({code})" if "AccessDenied" in code
               else f"this IAM cannot simulate policies ({type(exc).__name__}; moto does not implement "
                    "SimulatePrincipalPolicy)")
        return skipped(name, f"cannot check whether {principal} may pass the role: {why}",
                       "on AWS: IAM console → Policy simulator, or "
                       + ctx.aws_cli("iam", f"simulate-principal-policy --policy-source-arn {principal} "
                                            f"--action-names iam:PassRole --resource-arns {role_arn}"))
    decisions = {r.get("EvalDecision") for r in answer.get("EvaluationResults", [])}
    if decisions == {"allowed"}:
        return passed(name, f"{principal} may pass {role_arn} to SageMaker")
    return failed(name, f"{principal} may not pass {role_arn} ({', '.join(sorted(map(str, decisions)))}): "
                  "launches fail with AccessDenied",
                  f"attach to {principal.rsplit('/', 1)[-1]}: '{json.dumps(policy)}' "
                  "(aws iam put-role-policy / put-user-policy --policy-name pass-sagemaker-role --policy-document)")


async def sagemaker_api(ctx: Context) -> Check:
    sagemaker = await ctx.client("sagemaker")
    answer = await sagemaker.list_training_jobs(MaxResults=1)
    where = ctx.endpoint("sagemaker") or f"AWS ({ctx.region})"
    latest = answer.get("TrainingJobSummaries") or []
    note = f"latest job {latest[0]['TrainingJobName']}" if latest else "no training jobs yet"
    return passed("sagemaker", f"SageMaker answers ListTrainingJobs at {where} ({note})")


def _plain(note: str) -> str:
    """A note that may carry an HTML error page, as one short line."""
    return " ".join(re.sub(r"<[^>]*>", " ", note).split())[:100]


async def gpu_quotas(ctx: Context) -> Check:
    catalog = Catalog.load(ctx.training.catalog_file)
    gpu_types = [t.id for t in catalog.instance_types if t.gpus > 0]
    checker = QuotaChecker(await ctx.client("service-quotas"))
    results: list[QuotaCheck] = []
    for instance_type in gpu_types:
        results.append(await checker.check(instance_type))
        if results[0].outcome == "skipped" and results[0].note.startswith("Service Quotas"):
            break  # it cannot answer at all (moto, no permission): asking for each type only waits longer
    skipped_ones = [r for r in results if r.outcome == "skipped"]
    if len(skipped_ones) == len(results):
        note = _plain(skipped_ones[0].note) if skipped_ones else "the catalog lists no GPU instance type"
        return skipped("gpu-quotas", f"Service Quotas cannot answer here: {note}",
                       "on AWS: Service Quotas console → Amazon SageMaker → \"<type> for training job usage\"")
    zero = [r for r in results if r.outcome == "insufficient"]
    listing = "; ".join(f"{r.quota_name}: {'?' if r.value is None else f'{r.value:g}'}" for r in results)
    if not zero:
        return passed("gpu-quotas", listing)
    status = Status.FAIL if len(zero) + len(skipped_ones) == len(results) else Status.WARN
    requests = "; ".join(
        ctx.aws_cli("service-quotas", f"request-service-quota-increase --service-code {SERVICE_CODE} "
                                      f"--quota-code {r.quota_code} --desired-value 1") for r in zero)
    what = "no GPU training is possible" if status is Status.FAIL else "jobs on those types fail insufficient_quota"
    return Check("gpu-quotas", status, f"{len(zero)} GPU quota(s) at 0, {what}: {listing}", requests)
