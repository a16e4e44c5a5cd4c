"""The consumer loop (shared/consumer.py) when AWS throttles: a handler throttled past botocore's retries waits
and tries again without spending the message's receives (so throttling alone never dead-letters a message), and a
throttled delete or inbox write leaves the message to come back rather than escaping the loop."""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.exceptions import ClientError

from shared.consumer import Consumer, ConsumerConfig
from shared.envelope import Envelope
from shared.inbox import MemoryInbox


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)


class FakeQueue:
    """SQS as the consumer uses it, in memory: a message comes back (its receive count one up) until deleted;
    `throttle_deletes` deletes are refused first."""

    def __init__(self, throttle_deletes: int = 0) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.receives: dict[str, int] = {}
        self.dead: list[dict[str, Any]] = []
        self.throttle_deletes = throttle_deletes
        self._ids = iter(range(1_000_000))

    async def send_message(self, QueueUrl: str, MessageBody: str, **extra: Any) -> dict[str, Any]:
        message_id = f"m{next(self._ids)}"
        message = {"MessageId": message_id, "Body": MessageBody,
                   "MessageAttributes": extra.get("MessageAttributes") or {}}
        if QueueUrl == "dlq":
            self.dead.append(message)
        else:
            self.messages[message_id] = message
        return {"MessageId": message_id}

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        out = []
        for message_id, message in self.messages.items():
            self.receives[message_id] = self.receives.get(message_id, 0) + 1
            out.append({**message, "ReceiptHandle": message_id,
                        "Attributes": {"ApproximateReceiveCount": str(self.receives[message_id])}})
        return {"Messages": out}

    async def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        if self.throttle_deletes:
            self.throttle_deletes -= 1
            raise throttled("DeleteMessage")
        self.messages.pop(ReceiptHandle, None)

    async def change_message_visibility(self, **_: Any) -> None:
        return None


def _consumer(queue: FakeQueue, handle: Any, inbox: MemoryInbox | None = None) -> Consumer:
    config = ConsumerConfig(queue_url="queue", dlq_url="dlq", max_receives=3, max_not_ready_retries=30)
    return Consumer(queue, config, handle, inbox)


def _send(queue: FakeQueue, envelope: Envelope) -> None:
    asyncio.run(queue.send_message(QueueUrl="queue", MessageBody=envelope.model_dump_json()))


def test_a_handler_throttled_more_often_than_the_receive_budget_is_not_dead_lettered() -> None:
    queue, handled = FakeQueue(), list[str]()

    async def handle(envelope: Envelope) -> None:
        if len(handled) < 5:  # throttled five times: more than max_receives
            handled.append("throttled")
            raise throttled("PutItem")
        handled.append("done")

    _send(queue, Envelope(type="thing.happened", data={}))
    asyncio.run(_consumer(queue, handle, MemoryInbox()).run_until_idle())  # (the fake ignores delays)
    assert handled == ["throttled"] * 5 + ["done"]
    assert queue.dead == [] and queue.messages == {}


def test_a_throttled_delete_leaves_the_message_to_come_back_and_the_inbox_drops_the_repeat() -> None:
    queue, handled = FakeQueue(throttle_deletes=1), list[str]()

    async def handle(envelope: Envelope) -> None:
        handled.append(envelope.id)

    envelope = Envelope(type="thing.happened", data={})
    _send(queue, envelope)
    # handled; its delete throttled, so it comes back; the inbox knows it is done: dropped and deleted
    asyncio.run(_consumer(queue, handle, MemoryInbox()).run_until_idle())
    assert handled == [envelope.id] and queue.messages == {} and queue.dead == []
