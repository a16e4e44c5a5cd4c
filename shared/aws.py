"""One factory for AWS clients (aiobotocore).

Endpoints come from botocore's standard configuration (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`,
region and the credentials chain), so no code path knows whether it talks to AWS, LocalStack or the
embedded emulator. Timeouts and the retry mode are always explicit.

S3 clients sign with SigV4 on the regional endpoint (`s3_config`): buckets created since 2020 refuse SigV2, and
a presigned URL on the global endpoint is redirected (or refused) outside us-east-1.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from shared import faults
from shared.settings import ServiceSettings


def client_config(settings: ServiceSettings, **overrides: Any) -> AioConfig:
    """The settings' timeouts and retries; `overrides` (AioConfig's own names) win, for a client whose calls
    are unlike the others (a model's invocation may take minutes, and must not be sent twice)."""
    config: dict[str, Any] = {
        "region_name": settings.aws_default_region,
        "connect_timeout": settings.aws_connect_timeout_s,
        "read_timeout": settings.aws_read_timeout_s,
        "retries": {"mode": settings.aws_retry_mode, "max_attempts": settings.aws_max_attempts},
        "max_pool_connections": 50,
    }
    return AioConfig(**{**config, **overrides})


def is_aws_endpoint(url: str | None) -> bool:
    """Whether an endpoint is AWS's own (rather than an override: the embedded AWS, LocalStack)."""
    host = urlsplit(url or "").hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def s3_config(on_aws: bool) -> dict[str, Any]:
    """AioConfig arguments for S3: SigV4 (`s3v4`, also in presigned URLs, which botocore would otherwise sign
    with SigV2) on the regional endpoint, us-east-1 included (`s3.us-east-1.amazonaws.com`, not the global
    `s3.amazonaws.com`). On AWS, virtual-hosted style (`<bucket>.s3.<region>.amazonaws.com`: the bucket's own
    origin, and the style AWS documents for SigV4); against an endpoint override, path style, since a bucket
    label cannot go in front of a host such as `127.0.0.1:4566` or `moto:5000`."""
    return {"signature_version": "s3v4",
            "s3": {"us_east_1_regional_endpoint": "regional", "addressing_style": "virtual" if on_aws else "path"}}


class AwsClients:
    """Opens clients once per process (in a lifespan or a worker's bootstrap) and closes them together."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._session = get_session()
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}

    async def get(self, service: str, **config: Any) -> Any:
        """The service's client, made on first use (with `config` overriding the settings' then)."""
        if service not in self._clients:
            if service == "s3":
                config = {**await self._s3_defaults(), **config}
            creator = self._session.create_client(service, config=client_config(self._settings, **config))
            self._clients[service] = await self._stack.enter_async_context(creator)
            faults.install(self._clients[service])  # LLMT_FAULTS: only in the fault suite (shared/faults.py)
        return self._clients[service]

    async def _s3_defaults(self) -> dict[str, Any]:
        """`s3_config` for wherever botocore's configuration points S3 (a client is made to learn where: it
        makes no request)."""
        async with self._session.create_client("s3", config=client_config(self._settings)) as probe:
            return s3_config(is_aws_endpoint(probe.meta.endpoint_url))

    async def account_id(self) -> str:
        sts = await self.get("sts")
        identity = await sts.get_caller_identity()
        return str(identity["Account"])

    async def topic_arn(self, topic_name: str) -> str:
        account = await self.account_id()
        return f"arn:aws:sns:{self._settings.aws_default_region}:{account}:{topic_name}"

    async def queue_url(self, queue_name: str) -> str:
        sqs = await self.get("sqs")
        return str((await sqs.get_queue_url(QueueName=queue_name))["QueueUrl"])

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
