"""The worker entry point every service shares: bootstrap, typed dispatch by event type, consume until SIGTERM.

A service lists its routes once: `ROUTES = (on(FileUploaded, validate_file), on(UserDeleted, delete_user_data))`.
The dispatcher parses each message's data into the route's contract model before the handler runs, so a handler
is a plain `async def handler(event: FileUploaded, deps: Deps)`, and a payload that does not parse is a
permanent failure (InvalidPayload: dead-lettered at once, never retried).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from shared.aws import AwsClients
from shared.consumer import Consumer, ConsumerConfig, InvalidPayload
from shared.contracts.event import Event
from shared.envelope import Envelope
from shared.inbox import DynamoInbox
from shared.logging import configure_logging
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)
D = TypeVar("D")
E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Route(Generic[D]):
    """Messages of `model.TYPE` go, parsed into `model`, to `handler(event, deps)`."""

    model: type[Event]
    handler: Callable[[Any, D], Awaitable[None]]


def on(model: type[E], handler: Callable[[E, D], Awaitable[None]]) -> Route[D]:
    """A route whose handler's first parameter is checked (by mypy) against the model it receives."""
    return Route(model, handler)


def parse_payload(envelope: Envelope, model: type[E]) -> E:
    """The envelope's data as `model`; InvalidPayload (a permanent failure) when it does not parse."""
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        raise InvalidPayload(envelope.type, errors) from exc


def route_table(routes: Iterable[Route[D]]) -> dict[str, Route[D]]:
    table: dict[str, Route[D]] = {}
    for route in routes:
        if route.model.TYPE in table:
            raise ValueError(f"two routes for {route.model.TYPE}")
        table[route.model.TYPE] = route
    return table


def dispatcher(routes: Iterable[Route[D]], deps: D) -> Callable[[Envelope], Awaitable[None]]:
    """Each message type to its one route; a type nobody handles is logged and dropped."""
    table = route_table(routes)

    async def dispatch(envelope: Envelope) -> None:
        route = table.get(envelope.type)
        if route is None:
            log.warning("no handler for event type; dropped", extra={"event_type": envelope.type})
            return
        await route.handler(parse_payload(envelope, route.model), deps)

    return dispatch


async def build_consumer(aws: AwsClients, queue_name: str, inbox_table: str | None,
                         handle: Callable[[Envelope], Awaitable[None]], **config: Any) -> Consumer:
    sqs = await aws.get("sqs")
    queue_url = await aws.queue_url(queue_name)
    dlq_url = await aws.queue_url(f"{queue_name}-dlq")
    inbox = DynamoInbox(await aws.get("dynamodb"), inbox_table) if inbox_table else None
    return Consumer(sqs, ConsumerConfig(queue_url=queue_url, dlq_url=dlq_url, **config), handle, inbox)


def run_worker(service: str, settings: ServiceSettings, queue_name: str, inbox_table: str | None,
               make_deps: Callable[[AwsClients], Awaitable[D]], routes: Iterable[Route[D]]) -> None:
    configure_logging(f"{service}-worker", settings.log_level)

    async def main() -> None:
        aws = AwsClients(settings)
        try:
            deps = await make_deps(aws)
            consumer = await build_consumer(aws, queue_name, inbox_table, dispatcher(routes, deps),
                                            visibility_timeout_s=settings.worker_visibility_timeout_s)
            consumer.install_signal_handlers()
            await consumer.run()
        finally:
            await aws.close()

    asyncio.run(main())
