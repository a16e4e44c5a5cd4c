"""The shared SQS consumer loop against the embedded SQS and DynamoDB, over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deploy.local.provision import ensure_queue, ensure_table
from shared.aws import AwsClients
from shared.consumer import Consumer, ConsumerConfig, RetryLater
from shared.contracts import resources
from shared.contracts.event import Event
from shared.envelope import Envelope, new_event, send_command
from shared.inbox import DynamoInbox
from shared.settings import ServiceSettings
from shared.worker import dispatcher, on

pytestmark = pytest.mark.asyncio(loop_scope="function")


class ThingHappened(Event):
    """A test-only event type: these tests are about the loop, not any service's events."""

    TYPE = "test.thing.happened"
    n: int = 0


@pytest.fixture
async def env(aws: Any) -> AsyncIterator[dict[str, Any]]:
    import boto3

    name = f"consumer-test-{uuid.uuid4().hex[:8]}"
    queue = resources.Queue(name, "test", visibility_timeout_s=2, max_receives=3)
    url, _ = ensure_queue(boto3.client("sqs"), queue)
    dlq_url = boto3.client("sqs").get_queue_url(QueueName=queue.dlq_name)["QueueUrl"]
    table = resources.Table(f"{name}-inbox", "test", resources.Key("message_id"))
    ensure_table(boto3.client("dynamodb"), table)
    clients = AwsClients(ServiceSettings())
    try:
        yield {"sqs": await clients.get("sqs"), "db": await clients.get("dynamodb"), "url": url,
               "dlq": dlq_url, "table": table.name}
    finally:
        await clients.close()


def _consumer(env: dict[str, Any], handle: Any, **config: Any) -> Consumer:
    cfg = ConsumerConfig(queue_url=env["url"], dlq_url=env["dlq"], wait_time_s=1,
                         visibility_timeout_s=config.pop("visibility_timeout_s", 2), max_receives=3, **config)
    return Consumer(env["sqs"], cfg, handle, DynamoInbox(env["db"], env["table"]))


async def _dlq_bodies(env: dict[str, Any]) -> list[dict[str, Any]]:
    result = await env["sqs"].receive_message(QueueUrl=env["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                              MessageAttributeNames=["All"])
    return [{"body": m["Body"], "attributes": m.get("MessageAttributes", {})}
            for m in result.get("Messages", [])]


async def test_handled_messages_are_deleted_and_duplicates_dropped(env: dict[str, Any]) -> None:
    seen: list[str] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(envelope.id)

    event = new_event(ThingHappened(n=1))
    await send_command(env["sqs"], env["url"], event)
    await send_command(env["sqs"], env["url"], event)  # at-least-once delivery: the same event twice
    consumer = _consumer(env, handle)
    deadline = asyncio.get_running_loop().time() + 20
    # A copy that arrives while the first is in hand is put back (the inbox says "busy"), then dropped.
    while asyncio.get_running_loop().time() < deadline:
        await consumer.run_until_idle()
        attrs = (await env["sqs"].get_queue_attributes(QueueUrl=env["url"], AttributeNames=["All"]))["Attributes"]
        if attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0":
            break
    assert seen == [event.id]
    assert attrs["ApproximateNumberOfMessages"] == attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_one_bad_message_does_not_fail_the_batch(env: dict[str, Any]) -> None:
    handled: list[int] = []

    async def handle(envelope: Envelope) -> None:
        if envelope.data["n"] == 2:
            raise ValueError("boom")
        handled.append(envelope.data["n"])

    for n in range(4):
        await send_command(env["sqs"], env["url"], new_event(ThingHappened(n=n)))
    await env["sqs"].send_message(QueueUrl=env["url"], MessageBody="not json at all")
    consumer = _consumer(env, handle)
    deadline = asyncio.get_running_loop().time() + 40
    dead: list[dict[str, Any]] = []
    while len(dead) < 2 and asyncio.get_running_loop().time() < deadline:
        await consumer.run_until_idle()
        dead += await _dlq_bodies(env)
    assert sorted(handled) == [0, 1, 3]
    reasons = sorted(d["attributes"]["dead_letter_reason"]["StringValue"][:12] for d in dead)
    assert len(dead) == 2 and any("boom" in d["attributes"]["dead_letter_reason"]["StringValue"] for d in dead)
    assert reasons[0].startswith("body is not") or reasons[1].startswith("body is not")


async def test_retry_later_resends_with_a_counted_delay_then_succeeds(env: dict[str, Any]) -> None:
    attempts: list[int] = []

    async def handle(envelope: Envelope) -> None:
        attempts.append(envelope.retries)
        if envelope.retries < 2:
            raise RetryLater("not yet", delay_s=0)

    await send_command(env["sqs"], env["url"], new_event(ThingHappened()))
    await _consumer(env, handle).run_until_idle(idle_polls=2)
    assert attempts == [0, 1, 2]
    assert await _dlq_bodies(env) == []


async def test_long_handler_keeps_its_message_invisible(env: dict[str, Any]) -> None:
    calls: list[str] = []

    async def slow(envelope: Envelope) -> None:
        calls.append(envelope.id)
        await asyncio.sleep(3.5)  # longer than the 2 s visibility timeout: the heartbeat must extend it

    await send_command(env["sqs"], env["url"], new_event(ThingHappened()))
    first, second = _consumer(env, slow), _consumer(env, slow)
    await asyncio.gather(first.run_until_idle(), second.run_until_idle(idle_polls=4))
    assert len(calls) == 1


async def test_a_long_handler_does_not_hold_the_messages_behind_it(env: dict[str, Any]) -> None:
    """The first message's handler waits until a second one, sent only once the first is in hand, has been
    handled: a loop that finished a batch before receiving again would never get there (the deadline fails)."""
    first_started, second_handled = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    async def handle(envelope: Envelope) -> None:
        n = int(envelope.data["n"])
        if n == 1:
            first_started.set()
            await second_handled.wait()
        handled.append(n)
        if n == 2:
            second_handled.set()

    consumer = _consumer(env, handle, visibility_timeout_s=30)
    task = asyncio.create_task(consumer.run())
    await send_command(env["sqs"], env["url"], new_event(ThingHappened(n=1)))
    await asyncio.wait_for(first_started.wait(), timeout=20)
    await send_command(env["sqs"], env["url"], new_event(ThingHappened(n=2)))
    await asyncio.wait_for(second_handled.wait(), timeout=20)
    consumer.stop()
    await asyncio.wait_for(task, timeout=25)
    assert handled == [2, 1]


async def test_stop_ends_a_long_poll_promptly(env: dict[str, Any]) -> None:
    async def handle(envelope: Envelope) -> None:
        return None

    consumer = Consumer(env["sqs"], ConsumerConfig(queue_url=env["url"], dlq_url=env["dlq"], wait_time_s=20),
                        handle)
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.5)
    consumer.stop()
    await asyncio.wait_for(task, timeout=3)


async def test_a_payload_that_breaks_its_contract_goes_to_the_dlq_at_once(
        env: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """GIVEN a message of a known type whose data does not parse into the type's model, WHEN consumed, THEN the
    handler never runs, the message is dead-lettered on its first delivery (no retries) and the log names the
    message id and the validation error."""
    handled: list[ThingHappened] = []
    deliveries: list[str] = []

    async def handle(event: ThingHappened, deps: None) -> None:
        handled.append(event)

    typed = dispatcher((on(ThingHappened, handle),), None)

    async def counting(envelope: Envelope) -> None:
        deliveries.append(envelope.id)
        await typed(envelope)

    bad = Envelope(type=ThingHappened.TYPE, data={"n": "not a number"})
    await send_command(env["sqs"], env["url"], bad)
    await send_command(env["sqs"], env["url"], new_event(ThingHappened(n=7)))
    consumer = _consumer(env, counting)
    dead: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + 20
    with caplog.at_level("ERROR", logger="shared.consumer"):
        while not dead and asyncio.get_running_loop().time() < deadline:
            await consumer.run_until_idle()
            dead += await _dlq_bodies(env)
    assert [e.n for e in handled] == [7]
    assert deliveries.count(bad.id) == 1  # dead-lettered on its first delivery: never retried
    assert len(dead) == 1 and Envelope.model_validate_json(dead[0]["body"]).id == bad.id
    reason = dead[0]["attributes"]["dead_letter_reason"]["StringValue"]
    assert "does not match its contract" in reason and "n:" in reason
    records = [r for r in caplog.records if "does not match its contract" in r.getMessage()]
    assert len(records) == 1
    assert getattr(records[0], "message_id", None) and "n:" in getattr(records[0], "error", "")
