"""One factory for AWS clients (aiobotocore).

Endpoints come from botocore's standard configuration (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`,
region and the credentials chain), so no code path knows whether it talks to AWS, LocalStack or the
embedded emulator. Timeouts and the retry mode are always explicit.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

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
            creator = self._session.create_client(service, config=client_config(self._settings, **config))
            self._clients[service] = await self._stack.enter_async_context(creator)
        return self._clients[service]

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
