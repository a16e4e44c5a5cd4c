"""The worker entry point every service shares: bootstrap, dispatch by event type, consume until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from shared.aws import AwsClients
from shared.consumer import Consumer, ConsumerConfig
from shared.events import Envelope
from shared.inbox import DynamoInbox
from shared.logging import configure_logging
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)
D = TypeVar("D")
EventHandler = Callable[[Envelope, D], Awaitable[None]]


def dispatcher(handlers: Mapping[str, EventHandler[D]], deps: D) -> Callable[[Envelope], Awaitable[None]]:
    """One dict maps each message type to its handler; a type nobody handles is logged and dropped."""

    async def dispatch(envelope: Envelope) -> None:
        handler = handlers.get(envelope.type)
        if handler is None:
            log.warning("no handler for event type; dropped", extra={"event_type": envelope.type})
            return
        await handler(envelope, deps)

    return dispatch


async def build_consumer(aws: AwsClients, queue_name: str, inbox_table: str | None,
                         handle: Callable[[Envelope], Awaitable[None]], **config: Any) -> Consumer:
    sqs = await aws.get("sqs")
    queue_url = await aws.queue_url(queue_name)
    dlq_url = await aws.queue_url(f"{queue_name}-dlq")
    inbox = DynamoInbox(await aws.get("dynamodb"), inbox_table) if inbox_table else None
    return Consumer(sqs, ConsumerConfig(queue_url=queue_url, dlq_url=dlq_url, **config), handle, inbox)


def run_worker(service: str, settings: ServiceSettings, queue_name: str, inbox_table: str | None,
               make_deps: Callable[[AwsClients], Awaitable[D]], handlers: Mapping[str, EventHandler[D]]) -> None:
    configure_logging(f"{service}-worker", settings.log_level)

    async def main() -> None:
        aws = AwsClients(settings)
        try:
            deps = await make_deps(aws)
            consumer = await build_consumer(aws, queue_name, inbox_table, dispatcher(handlers, deps))
            consumer.install_signal_handlers()
            await consumer.run()
        finally:
            await aws.close()

    asyncio.run(main())
