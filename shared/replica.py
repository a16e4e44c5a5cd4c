"""A queue of this process's own: events every replica of a service must see (fan-out, not work sharing).

A work queue hands each message to one consumer. Some events must reach every replica instead: a revoked
key has to stop working at every gateway, a live update has to reach every browser wherever it is
connected. `ReplicaQueue` gives the running process its own SQS queue, named `prefix` + a replica id,
subscribed to a topic for the event types it wants (a filter policy on the `type` attribute, raw
delivery), consumes it with the shared consumer loop, and deletes subscription and queue again at stop.

The events it carries are idempotent updates of in-memory state, so there is no inbox; a message a handler
keeps failing on is dropped after a few receives, and one whose payload does not match its contract
(InvalidPayload) at once, both logged: a queue that lives and dies with one process has nobody to read a
DLQ. What happened before the queue existed is not in it: a replica that needs the past catches up some
other way *after* `start()`, so that nothing falls between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterator, Sequence
from types import TracebackType

from shared.aws import AwsClients
from shared.consumer import Consumer, ConsumerConfig, Handler

log = logging.getLogger(__name__)

MAX_QUEUE_NAME = 80  # SQS's limit
_NOT_A_NAME_CHAR = re.compile(r"[^A-Za-z0-9_-]+")


def replica_id(room: int = 40) -> str:
    """`<host>-<pid>-<random>`, within `room` characters: readable in the console, unique even for two
    replicas in one process (tests) or two containers that are both pid 1."""
    tail = f"-{os.getpid()}-{secrets.token_hex(3)}"
    host = _NOT_A_NAME_CHAR.sub("-", socket.gethostname()).strip("-") or "host"
    return host[:max(1, room - len(tail))] + tail


def replica_queue_name(prefix: str, replica: str | None = None) -> str:
    room = MAX_QUEUE_NAME - len(prefix)
    if room < 12:
        raise ValueError(f"queue prefix {prefix!r} leaves no room for a replica id within {MAX_QUEUE_NAME} characters")
    name = prefix + (replica or replica_id(room))
    if len(name) > MAX_QUEUE_NAME or _NOT_A_NAME_CHAR.search(name):
        raise ValueError(f"not a valid SQS queue name: {name!r}")
    return name


def _allow_topic(queue_arn: str, topic_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "AllowTopic", "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}}]})


class ReplicaQueue:
    """Use as `async with ReplicaQueue(...)`, or call `start()` and `close()` yourself."""

    def __init__(self, aws: AwsClients, *, topic: str, queue_prefix: str, event_types: Sequence[str],
                 handle: Handler, wait_time_s: int = 2, retention_s: int = 900, max_receives: int = 3,
                 replica: str | None = None) -> None:
        if not event_types:
            raise ValueError("a replica queue needs the event types it subscribes to")
        self.queue_name = replica_queue_name(queue_prefix, replica)
        self._aws = aws
        self._topic = topic
        self._event_types = list(event_types)
        self._handle = handle
        self._wait_time_s = wait_time_s
        self._retention_s = max(60, retention_s)  # SQS's minimum
        self._max_receives = max_receives
        self.queue_url: str | None = None
        self.subscription_arn: str | None = None
        self._consumer: Consumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Queue, policy, subscription, consumer; undone again if a step fails."""
        try:
            await self._create()
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._consume(), name=f"replica-queue:{self.queue_name}")
        log.info("replica queue started", extra={"queue": self.queue_name, "event_types": self._event_types})

    async def _create(self) -> None:
        sqs, sns = await self._aws.get("sqs"), await self._aws.get("sns")
        self.queue_url = str((await sqs.create_queue(QueueName=self.queue_name, Attributes={
            "MessageRetentionPeriod": str(self._retention_s), "VisibilityTimeout": "30"}))["QueueUrl"])
        attributes = await sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        queue_arn = attributes["Attributes"]["QueueArn"]
        topic_arn = await self._aws.topic_arn(self._topic)
        await sqs.set_queue_attributes(QueueUrl=self.queue_url,
                                       Attributes={"Policy": _allow_topic(queue_arn, topic_arn)})
        subscription = await sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True,
            Attributes={"RawMessageDelivery": "true", "FilterPolicy": json.dumps({"type": self._event_types})})
        self.subscription_arn = str(subscription["SubscriptionArn"])
        self._consumer = Consumer(sqs, ConsumerConfig(
            queue_url=self.queue_url, dlq_url=None, max_receives=self._max_receives,
            wait_time_s=self._wait_time_s, visibility_timeout_s=30), self._handle)

    async def _consume(self) -> None:
        """The consumer loop survives its own failures (a delete that failed, say) until `close()`."""
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.run()
                return
            except Exception:
                log.exception("replica queue consumer failed; restarting", extra={"queue": self.queue_name})
                await asyncio.sleep(1)

    async def close(self) -> None:
        """Stop consuming, unsubscribe, delete the queue. Safe to call twice or after a failed start."""
        if self._consumer is not None:
            self._consumer.stop()
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            elif not task.cancelled() and task.exception() is not None:
                log.error("replica queue consumer ended with an error", exc_info=task.exception(),
                          extra={"queue": self.queue_name})
        if self.subscription_arn is not None:
            with self._warn_on_error("unsubscribe"):
                await (await self._aws.get("sns")).unsubscribe(SubscriptionArn=self.subscription_arn)
            self.subscription_arn = None
        if self.queue_url is not None:
            with self._warn_on_error("delete queue"):
                await (await self._aws.get("sqs")).delete_queue(QueueUrl=self.queue_url)
            self.queue_url = None
            log.info("replica queue deleted", extra={"queue": self.queue_name})

    @contextlib.contextmanager
    def _warn_on_error(self, step: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            # Stopping goes on: a leftover queue costs nothing but clutter, and its messages expire.
            log.warning("replica queue cleanup step failed", exc_info=True,
                        extra={"queue": self.queue_name, "step": step})

    async def __aenter__(self) -> ReplicaQueue:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
