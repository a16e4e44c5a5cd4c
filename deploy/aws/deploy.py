"""`make deploy` and `make teardown`: the whole platform into an AWS account, and out again.

    python -m deploy.aws.deploy deploy   [--config deploy/aws/config.toml] [--dry-run]
    python -m deploy.aws.deploy teardown [--config ...] [--dry-run] [--empty-bucket] [--yes]

Configuration: a TOML file (deploy/aws/config.example.toml shows every key; the real deploy/aws/config.toml is
git-ignored), each key overridable by the environment as DEPLOY_<KEY> (lists comma-separated). Secrets are
never in the file: GOOGLE_CLIENT_SECRET and HF_TOKEN come from the environment, and the JWT signing key is
generated here on the first deployment.

Deploy prints every step: the account check, the images (deploy.aws.images), the template (deploy.aws.template)
uploaded to a small artifacts bucket, a CloudFormation change set (its changes listed before it runs), the wait,
and the stack's outputs with the URL. Billing metrics exist only in us-east-1, so in another region the cost
alarm is a second small stack there. `--dry-run` prints the plan and calls nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from deploy.aws import iam, images, stack_parameters, template
from shared.contracts import resources

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path(__file__).with_name("config.toml")
BILLING_REGION = "us-east-1"
Say = Callable[[str], None]


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Config:
    account_id: str
    region: str
    domain: str
    certificate_arn: str
    vpc_id: str
    vpc_cidr: str
    private_subnet_ids: tuple[str, ...]
    public_subnet_ids: tuple[str, ...]
    alarm_email: str
    prefix: str = resources.PREFIX
    sagemaker_cost_alarm_usd: int = 100
    google_client_id: str = ""
    serving_image_uri: str = ""  # empty: AWS's LMI image in `region` (deploy.aws.images.serving_image)
    security_alert_email: str = ""  # subscribed to auth's security alerts; empty: nobody (subscribe later)

    @property
    def stack(self) -> str:
        return self.prefix

    @property
    def billing_stack(self) -> str:
        return f"{self.prefix}-billing"

    @property
    def artifacts_bucket(self) -> str:
        return f"{self.prefix}-cfn-{self.account_id}-{self.region}"

    @property
    def bucket(self) -> str:
        return f"{self.prefix}-{self.account_id}-{self.region}"  # as the template names it

    @property
    def serving_image(self) -> images.EcrImage:
        return images.serving_image(self.serving_image_uri, self.region)


def load_config(path: Path, env: dict[str, str]) -> Config:
    """The file's values, each overridden by DEPLOY_<KEY> from the environment; a missing key is an error that
    names it."""
    values: dict[str, Any] = {}
    if path.exists():
        values.update(tomllib.loads(path.read_text()))
    elif not any(k.startswith("DEPLOY_") for k in env):
        raise DeployError(f"no configuration: copy deploy/aws/config.example.toml to {path} and fill it in "
                          "(or set DEPLOY_<KEY> variables)")
    known = {f.name: f for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DeployError(f"{path}: unknown keys {', '.join(unknown)}")
    for name in known:
        if f"DEPLOY_{name.upper()}" in env:
            values[name] = env[f"DEPLOY_{name.upper()}"]
    for name in ("private_subnet_ids", "public_subnet_ids"):
        if isinstance(values.get(name), str):
            values[name] = [v.strip() for v in values[name].split(",") if v.strip()]
        if name in values:
            values[name] = tuple(values[name])
    missing = [n for n, f in known.items() if n not in values and f.default is MISSING]
    if missing:
        raise DeployError(f"configuration lacks {', '.join(missing)} ({path}, or DEPLOY_<KEY>)")
    if "sagemaker_cost_alarm_usd" in values:
        values["sagemaker_cost_alarm_usd"] = int(values["sagemaker_cost_alarm_usd"])
    values["account_id"] = str(values["account_id"])  # TOML reads 123456789012 as a number
    config = Config(**values)
    for name in ("private_subnet_ids", "public_subnet_ids"):
        if len(getattr(config, name)) < 2:
            raise DeployError(f"{name}: the load balancer and the tasks need subnets in two availability zones")
    try:
        image = config.serving_image
    except ValueError as exc:
        raise DeployError(f"serving_image_uri: {exc}: SageMaker endpoints run images from ECR") from exc
    if image.region != config.region:
        raise DeployError(f"serving_image_uri: {image.uri} is in {image.region}; SageMaker endpoints in "
                          f"{config.region} pull images from their own region")
    return config


def image_tag() -> str:
    """The commit, and a timestamp when the tree has uncommitted changes (what runs is then not the commit)."""
    sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    return f"{sha}-dirty-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}" if dirty.strip() else sha


def generate_signing_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


class Aws:
    """The boto3 clients deploy uses, made on first use (a dry run makes none)."""

    def __init__(self, region: str) -> None:
        import boto3

        self._session = boto3.session.Session(region_name=region)
        self._clients: dict[tuple[str, str], Any] = {}

    def __call__(self, service: str, region: str | None = None) -> Any:
        key = (service, region or self._session.region_name)
        if key not in self._clients:
            self._clients[key] = self._session.client(service, region_name=key[1])  # type: ignore[call-overload]
        return self._clients[key]


# ---- deploy ------------------------------------------------------------------------------------------------

def stack_exists(cfn: Any, name: str) -> bool:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    return bool(stacks) and stacks[0]["StackStatus"] != "REVIEW_IN_PROGRESS"


def parameters(config: Config, tag: str, *, exists: bool, log_groups_present: set[str], env: dict[str, str],
               dry_run: bool) -> list[dict[str, Any]]:
    """The stack's parameters. Secrets: given ones from the environment, else what the stack already has."""
    def value(key: str, val: str) -> dict[str, Any]:
        return {"ParameterKey": key, "ParameterValue": val}

    def keep(key: str) -> dict[str, Any]:
        return {"ParameterKey": key, "UsePreviousValue": True}

    params = [value("DomainName", config.domain), value("CertificateArn", config.certificate_arn),
              value("VpcId", config.vpc_id), value("VpcCidr", config.vpc_cidr),
              value("PrivateSubnetIds", ",".join(config.private_subnet_ids)),
              value("PublicSubnetIds", ",".join(config.public_subnet_ids)), value("ImageTag", tag),
              value("AlarmEmail", config.alarm_email),
              value("SageMakerCostAlarmUsd", str(config.sagemaker_cost_alarm_usd)),
              value("GoogleClientId", config.google_client_id),
              value("SecurityAlertEmail", config.security_alert_email),
              value("ServingImageUri", config.serving_image.uri),
              value("ServingImageRepositoryArn", config.serving_image.repository_arn)]
    if exists:
        params.append(keep("JwtPrivateKeyPem"))  # rotating the key is its own step (README)
    else:
        params.append(value("JwtPrivateKeyPem", "<generated>" if dry_run else generate_signing_key()))
    for key, var in (("GoogleClientSecretValue", "GOOGLE_CLIENT_SECRET"), ("HuggingFaceToken", "HF_TOKEN")):
        params.append(value(key, env[var]) if env.get(var) else keep(key) if exists else value(key, ""))
    for group in resources.describe().log_groups:
        key = template.log_group_parameter(group)
        params.append(keep(key) if exists else value(key, "false" if group in log_groups_present else "true"))
    return params


def _shown(params: list[dict[str, Any]]) -> str:
    secret = {"JwtPrivateKeyPem", "GoogleClientSecretValue", "HuggingFaceToken"}
    return ", ".join(f"{p['ParameterKey']}=" + ("<previous>" if p.get("UsePreviousValue") else
                                               "<secret>" if p["ParameterKey"] in secret and p["ParameterValue"]
                                               else p["ParameterValue"]) for p in params)


def upload_template(s3: Any, config: Config, body: str, key: str, say: Say) -> str:
    """CloudFormation takes a template this size only from S3: a private bucket of deploy's own."""
    bucket = config.artifacts_bucket
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:  # 404: not there yet (a 403 would be someone else's name: create_bucket says so)
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if config.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": config.region}
        s3.create_bucket(**kwargs)
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
        say(f"created the artifacts bucket s3://{bucket}")
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode(), ServerSideEncryption="AES256")
    return f"https://{bucket}.s3.{config.region}.amazonaws.com/{key}"


def apply_change_set(cfn: Any, stack: str, source: dict[str, str], params: list[dict[str, Any]], exists: bool,
                     name: str, say: Say) -> bool:
    """Create a change set, list its changes, execute it and wait. False when there was nothing to change."""
    kind = "UPDATE" if exists else "CREATE"
    say(f"{stack}: creating change set {name} ({kind})")
    cfn.create_change_set(StackName=stack, ChangeSetName=name, ChangeSetType=kind, Parameters=params,
                          Capabilities=["CAPABILITY_IAM"], Tags=[{"Key": "llm-tuner:stack", "Value": stack}],
                          **source)
    try:
        cfn.get_waiter("change_set_create_complete").wait(StackName=stack, ChangeSetName=name,
                                                          WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    except WaiterError as exc:
        described = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        reason = described.get("StatusReason", "")
        if "didn't contain changes" in reason or "No updates" in reason:
            say(f"{stack}: nothing to change")
            cfn.delete_change_set(StackName=stack, ChangeSetName=name)
            return False
        raise DeployError(f"{stack}: change set failed: {reason}") from exc
    described = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
    for change in described.get("Changes", []):
        c = change["ResourceChange"]
        say(f"  {c['Action']:<7} {c['LogicalResourceId']} ({c['ResourceType']})"
            + (f" replacement={c['Replacement']}" if c.get("Replacement") not in (None, "False") else ""))
    say(f"{stack}: executing the change set, waiting for {kind.lower()} (ECS waits for healthy tasks: minutes)")
    cfn.execute_change_set(StackName=stack, ChangeSetName=name)
    waiter = "stack_update_complete" if exists else "stack_create_complete"
    try:
        cfn.get_waiter(waiter).wait(StackName=stack, WaiterConfig={"Delay": 15, "MaxAttempts": 240})
    except WaiterError as exc:
        failures = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}"
                    for e in cfn.describe_stack_events(StackName=stack)["StackEvents"][:50]
                    if e["ResourceStatus"].endswith("_FAILED")]
        raise DeployError(f"{stack}: {kind.lower()} failed; first failures:\n  " + "\n  ".join(failures)) from exc
    return True


def deploy(config: Config, *, dry_run: bool, env: dict[str, str], say: Say = print,
           aws: Callable[..., Any] | None = None, tag: str | None = None) -> None:
    tag = re.sub(r"[^A-Za-z0-9-]", "-", tag or image_tag())  # also names the change set: letters, digits, -
    say(f"1. account {config.account_id}, region {config.region}, stack {config.stack}, "
        f"https://{config.domain}, images tagged {tag}")
    aws = None if dry_run else (aws or Aws(config.region))
    if aws is None:
        say("   would check that the credentials are for that account (sts get-caller-identity)")
    else:
        actual = aws("sts").get_caller_identity()["Account"]
        if actual != config.account_id:
            raise DeployError(f"the credentials are for account {actual}, the configuration says "
                              f"{config.account_id}: refusing to deploy into the wrong account")
        say(f"   credentials: account {actual}")
    say("2. images: build and push to ECR")
    images.push(config.account_id, config.region, config.prefix, tag, dry_run=dry_run, say=say,
                ecr=None if aws is None else aws("ecr"))
    body = template.render(template.build(config.prefix))
    say(f"3. template: deploy.aws.template for prefix {config.prefix} ({len(body)} bytes)")
    exists, present, url = False, set(), ""
    if aws is not None:
        exists = stack_exists(aws("cloudformation"), config.stack)
        groups = aws("logs").describe_log_groups(logGroupNamePrefix="/aws/")["logGroups"]
        present = {g["logGroupName"] for g in groups}
        url = upload_template(aws("s3"), config, body, f"templates/{config.stack}-{tag}.json", say)
        say(f"   uploaded to {url}")
    else:
        say(f"   would upload it to s3://{config.artifacts_bucket}/templates/{config.stack}-{tag}.json")
    params = parameters(config, tag, exists=exists, log_groups_present=present, env=env, dry_run=dry_run)
    say(f"4. stack {config.stack}: {'update' if exists else 'create'} through a change set")
    say(f"   parameters: {_shown(params)}")
    if aws is not None:
        apply_change_set(aws("cloudformation"), config.stack, {"TemplateURL": url}, params, exists,
                         f"deploy-{tag}", say)
    else:
        say("   would create the change set, print its changes, execute it and wait for the stack")
    billing = template.render(stack_parameters.billing_template())
    if config.region != BILLING_REGION:
        say(f"5. cost alarm: billing metrics live in {BILLING_REGION}, so stack {config.billing_stack} there")
        billing_params = [{"ParameterKey": "AlarmEmail", "ParameterValue": config.alarm_email},
                          {"ParameterKey": "SageMakerCostAlarmUsd",
                           "ParameterValue": str(config.sagemaker_cost_alarm_usd)}]
        if aws is not None:
            cfn = aws("cloudformation", BILLING_REGION)
            apply_change_set(cfn, config.billing_stack, {"TemplateBody": billing}, billing_params,
                             stack_exists(cfn, config.billing_stack), f"deploy-{tag}", say)
        else:
            say(f"   would deploy it in {BILLING_REGION} the same way")
    else:
        say("5. cost alarm: in the stack (us-east-1 has the billing metrics)")
    say("6. outputs")
    outputs: dict[str, str] = {}
    if aws is not None:
        stack = aws("cloudformation").describe_stacks(StackName=config.stack)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        for key in sorted(outputs):
            say(f"   {key}: {outputs[key]}")
    else:
        say("   would print the stack's outputs: Url, LoadBalancerDnsName, GoogleRedirectUri, BucketName, ...")
    say("next:")
    say(f"  - DNS: point {config.domain} at {outputs.get('LoadBalancerDnsName', 'the LoadBalancerDnsName output')}"
        " (CNAME, or a Route 53 alias record)")
    say(f"  - confirm the subscription email sent to {config.alarm_email}, and turn on 'Receive Billing Alerts' in "
        "the Billing console's preferences (billing metrics are off until then)")
    if config.google_client_id:
        say(f"  - Google OAuth client: add https://{config.domain}/auth/google/callback as a redirect URI")
    say(f"  - check it: make doctor; then open https://{config.domain}")


# ---- teardown ----------------------------------------------------------------------------------------------

def empty_bucket(s3: Any, bucket: str, say: Say) -> int:
    """Every version and delete marker, then the bucket: a versioned bucket is only empty that way."""
    removed = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        targets = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                   for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
        for i in range(0, len(targets), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": targets[i:i + 1000], "Quiet": True})
        removed += len(targets)
    s3.delete_bucket(Bucket=bucket)
    say(f"   deleted {removed} object versions and the bucket {bucket}")
    return removed


def serving_endpoints(sagemaker: Any) -> list[str]:
    """The SageMaker endpoints the inference service made (named `llmt-...`): not the stack's resources."""
    names: list[str] = []
    for page in sagemaker.get_paginator("list_endpoints").paginate(NameContains=iam.SERVING_NAME_PREFIX):
        names += [e["EndpointName"] for e in page.get("Endpoints", [])
                  if e["EndpointName"].startswith(iam.SERVING_NAME_PREFIX)]
    return names


def warn_about_endpoints(config: Config, aws: Callable[..., Any] | None, say: Say) -> None:
    """Endpoints bill by the hour, and without the stack nothing takes idle ones down: say which are left."""
    if aws is None:
        say(f"0. would list the SageMaker endpoints named {iam.SERVING_NAME_PREFIX}* (deployments): the stack does "
            "not own them")
        return
    try:
        names = serving_endpoints(aws("sagemaker"))
    except (ClientError, BotoCoreError) as exc:
        say(f"0. could not list SageMaker endpoints ({exc}): check for {iam.SERVING_NAME_PREFIX}* ones yourself")
        return
    if not names:
        say("0. no SageMaker endpoints of deployments left")
        return
    say(f"0. WARNING: {len(names)} SageMaker endpoint(s) of deployments are still up and billed by the hour; "
        "the stack does not own them and, once it is gone, nothing takes them down: " + ", ".join(names))
    cli = f"aws sagemaker --region {config.region}"
    say(f"   for each: its inference components ({cli} list-inference-components --endpoint-name-equals <name>, "
        f"then delete-inference-component), then {cli} delete-endpoint --endpoint-name <name>, and the endpoint "
        "config and model of the same name")


def teardown(config: Config, *, dry_run: bool, empty: bool, say: Say = print,
             aws: Callable[..., Any] | None = None) -> None:
    aws = None if dry_run else (aws or Aws(config.region))
    warn_about_endpoints(config, aws, say)
    verb = "would delete" if dry_run else "deleting"
    for step, (stack, region) in enumerate(((config.stack, config.region), (config.billing_stack, BILLING_REGION)), 1):
        say(f"{step}. {verb} stack {stack} in {region}")
        if aws is None:
            continue
        cfn = aws("cloudformation", region)
        if not stack_exists(cfn, stack):
            say("   not there")
            continue
        cfn.delete_stack(StackName=stack)
        cfn.get_waiter("stack_delete_complete").wait(StackName=stack, WaiterConfig={"Delay": 15, "MaxAttempts": 240})
        say("   deleted")
    say(f"3. the data bucket {config.bucket} is kept by the stack (DeletionPolicy Retain): users' files and "
        "every version of them")
    if empty:
        say(f"   {'would empty' if dry_run else 'emptying'} it (every version) and delete it")
        if aws is not None:
            empty_bucket(aws("s3"), config.bucket, say)
    else:
        say("   to delete it too: make teardown ARGS=--empty-bucket")
    say("4. also kept: the tables' point-in-time-recovery backups (35 days), the ECR repositories "
        f"({config.prefix}/*), the artifacts bucket {config.artifacts_bucket}, and /aws/sagemaker/TrainingJobs "
        "(SageMaker's own log group). To remove the images: aws ecr delete-repository --force --repository-name "
        f"{config.prefix}/<name>")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["deploy", "teardown"])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--dry-run", action="store_true", help="print the plan, call nothing")
    parser.add_argument("--empty-bucket", action="store_true", help="teardown: also empty and delete the data bucket")
    parser.add_argument("--yes", action="store_true", help="teardown: do not ask for the stack name")
    parser.add_argument("--tag", help="image tag (default: the commit)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        config = load_config(args.config, env)
        if args.command == "deploy":
            deploy(config, dry_run=args.dry_run, env=env, tag=args.tag)
            return
        if not (args.dry_run or args.yes):
            answer = input(f"This deletes stack {config.stack} in {config.account_id}/{config.region}. "
                           "Type the stack name to go on: ")
            if answer.strip() != config.stack:
                raise DeployError("not confirmed: nothing deleted")
        teardown(config, dry_run=args.dry_run, empty=args.empty_bucket)
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()

