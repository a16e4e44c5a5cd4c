"""What every check reads: the services' own settings, the resource description, and AWS clients.

Settings are loaded as the services load them (environment and `.env`). They are loaded in development mode
so that a placeholder secret does not stop the other checks; the `secrets` check judges the real
ENVIRONMENT with the services' own validators.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_settings import BaseSettings

from services.auth.settings import Settings as AuthSettings
from services.files.settings import Settings as FilesSettings
from services.gateway.settings import Settings as GatewaySettings
from services.inference.settings import Settings as InferenceSettings
from services.training.settings import Settings as TrainingSettings
from shared.aws import AwsClients
from shared.contracts import resources
from shared.contracts.resources import Resources
from shared.settings import ServiceSettings

# The AWS CLI's name for a service -> the suffix of its AWS_ENDPOINT_URL_<SERVICE> variable.
_ENDPOINT_SUFFIX = {"s3api": "S3", "service-quotas": "SERVICE_QUOTAS"}


def apply_local_cluster_env(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Point `environ` at the cluster `make up` runs: the same AWS_* values it gives its services."""
    from deploy.local.cluster import Cluster

    local = {k: v for k, v in Cluster().env().items() if k.startswith("AWS_") or k == "ENVIRONMENT"}
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):  # moto takes any credentials; never send real ones
        environ.pop(key, None)
        local.pop(key, None)
    environ.update(local)
    return local


def configured_names(all_settings: list[BaseSettings], described: Resources) -> dict[str, str]:
    """Each resource's default name -> the name this environment configures (DYNAMODB_USERS_TABLE, ...).

    A settings field whose default is a name from `shared.contracts.resources` is the setting that renames it, so the
    map follows the services' settings without a second list of variable names."""
    known = ({t.name for t in described.tables} | {t.name for t in described.topics}
             | {q.name for q in described.queues} | {described.bucket.name})
    names: dict[str, str] = {}
    for settings in all_settings:
        for attribute, info in type(settings).model_fields.items():
            if isinstance(info.default, str) and info.default in known:
                names[info.default] = getattr(settings, attribute)
    return names


@dataclass
class Context:
    environment: str
    auth: AuthSettings
    files: FilesSettings
    training: TrainingSettings
    gateway: GatewaySettings
    inference: InferenceSettings
    resources: Resources  # what shared/contracts/resources.py describes, under the default names
    names: dict[str, str]
    aws: AwsClients
    http_timeout_s: float = 5.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _identity: dict[str, Any] | None = field(default=None, repr=False)  # sts get-caller-identity, once

    @property
    def is_development(self) -> bool:
        return self.environment in ("development", "test")

    @property
    def region(self) -> str:
        return self.training.aws_default_region

    def name(self, default: str) -> str:
        """The configured name of the resource `shared.contracts.resources` calls `default`."""
        return self.names.get(default, default)

    async def client(self, service: str) -> Any:
        async with self._lock:  # concurrent checks share one client per service
            return await self.aws.get(service)

    async def identity(self) -> dict[str, Any]:
        if self._identity is None:
            sts = await self.client("sts")
            self._identity = dict(await sts.get_caller_identity())
        return self._identity

    async def arn(self, service: str, resource: str) -> str:
        """An ARN in this account and region (SNS topics, SQS queues)."""
        caller = await self.identity()
        partition = str(caller.get("Arn", "arn:aws:")).split(":")[1] or "aws"
        return f"arn:{partition}:{service}:{self.region}:{caller['Account']}:{resource}"

    def endpoint(self, cli_service: str) -> str | None:
        suffix = _ENDPOINT_SUFFIX.get(cli_service, cli_service.upper().replace("-", "_"))
        return os.environ.get(f"AWS_ENDPOINT_URL_{suffix}") or os.environ.get("AWS_ENDPOINT_URL")

    def aws_cli(self, cli_service: str, args: str) -> str:
        """The AWS CLI command for a fix, aimed at the same endpoint and region the doctor checked."""
        endpoint = self.endpoint(cli_service)
        where = f" --endpoint-url {endpoint}" if endpoint else ""
        return f"aws {cli_service}{where} --region {self.region} {args}"

    @property
    def provision_fix(self) -> str:
        if self.is_development:
            return ("`make provision` (python -m deploy.local.provision) creates what "
                    "shared/contracts/resources.py describes")
        return "`make deploy` brings the stack up to date with shared/contracts/resources.py"


def load_context(connect_timeout_s: float = 3.0, read_timeout_s: float = 10.0) -> Context:
    """Raises pydantic's ValidationError when a setting is malformed (not merely a placeholder)."""
    environment = ServiceSettings().environment
    # Loaded as development: placeholders are the `secrets` check's business, not a reason to stop.
    auth = AuthSettings(environment="development")
    files = FilesSettings(environment="development")
    training = TrainingSettings(environment="development")
    gateway = GatewaySettings(environment="development")
    inference = InferenceSettings(environment="development")
    described = resources.describe()
    names = configured_names([auth, files, training, gateway, inference], described)
    # Few retries: an unreachable endpoint should fail a check in seconds, not after a long backoff.
    aws_settings = training.model_copy(update={
        "aws_connect_timeout_s": connect_timeout_s, "aws_read_timeout_s": read_timeout_s, "aws_max_attempts": 2})
    return Context(environment=environment, auth=auth, files=files, training=training, gateway=gateway,
                   inference=inference, resources=described, names=names, aws=AwsClients(aws_settings))
