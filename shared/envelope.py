"""The one event envelope, and how it travels: published to SNS, sent to SQS, or arriving from EventBridge.

Every message a service sends or receives is an `Envelope` whose `data` is the payload of one `Event` model:
each producer declares its events (name and payload model) in one contract module under shared/contracts/,
publishes only through those models (`new_event(SomeEvent(...))`), and each consumer parses `data` back into
the same model before its handler runs (shared/worker.py). `parse_wire` accepts the three forms an SQS
body can take here: our envelope as sent directly (a command), an SNS notification wrapping it (when raw
delivery is off), and an EventBridge event (SageMaker's state changes), which becomes an envelope whose
type is derived from its detail-type.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from shared.contracts import sagemaker_events
from shared.contracts.event import Event
from shared.logging import current_request_id

ENVELOPE_VERSION = 1
# EventBridge events arrive in AWS's own shape; each known (source, detail-type) becomes an envelope of this type.
_EVENTBRIDGE_TYPES = {(sagemaker_events.EVENTBRIDGE_SOURCE, sagemaker_events.EVENTBRIDGE_DETAIL_TYPE):
                      sagemaker_events.TRAINING_JOB_STATE_CHANGED}


def _now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    id: str = Field(default_factory=lambda: f"evt_{uuid.uuid4().hex}")
    type: str
    occurred_at: datetime = Field(default_factory=_now)
    version: int = ENVELOPE_VERSION
    user_id: str | None = None
    correlation_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    # Delivery metadata, not part of the message: how often a handler has asked to see it again later.
    _retries: int = PrivateAttr(default=0)

    @property
    def retries(self) -> int:
        return self._retries


class MalformedMessage(ValueError):
    """The body is none of the forms we understand: a poison message, never worth a retry."""


def new_event(payload: Event, *, user_id: str | None = None, correlation_id: str | None = None) -> Envelope:
    """The envelope of one event: its type is the payload model's TYPE, its data the model as JSON."""
    return Envelope(type=payload.TYPE, data=payload.model_dump(mode="json"), user_id=user_id,
                    correlation_id=correlation_id or current_request_id())


def _attributes(envelope: Envelope) -> dict[str, dict[str, str]]:
    # Subscriptions filter on these, so a consumer only ever receives the types it handles.
    return {"type": {"DataType": "String", "StringValue": envelope.type}}


async def publish(sns: Any, topic_arn: str, envelope: Envelope) -> None:
    await sns.publish(TopicArn=topic_arn, Message=envelope.model_dump_json(),
                      MessageAttributes=_attributes(envelope))


async def send_command(sqs: Any, queue_url: str, envelope: Envelope, *, delay_s: int = 0) -> None:
    await sqs.send_message(QueueUrl=queue_url, MessageBody=envelope.model_dump_json(),
                           MessageAttributes=_attributes(envelope), DelaySeconds=delay_s)


def _from_eventbridge(body: dict[str, Any]) -> Envelope:
    type_ = _EVENTBRIDGE_TYPES.get((body.get("source", ""), body.get("detail-type", "")))
    if type_ is None:
        raise MalformedMessage(f"unknown EventBridge event {body.get('source')}/{body.get('detail-type')}")
    occurred = body.get("time") or _now().isoformat()
    return Envelope(id=f"evb_{body.get('id') or uuid.uuid4().hex}", type=type_, occurred_at=occurred,
                    data=body.get("detail") or {})


def parse_wire(raw: str) -> Envelope:
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage("body is not a JSON object")
    if body.get("Type") == "Notification" and "Message" in body:
        return parse_wire(str(body["Message"]))
    if "detail-type" in body and "source" in body:
        return _from_eventbridge(body)
    try:
        return Envelope.model_validate(body)
    except ValidationError as exc:
        raise MalformedMessage(f"not an envelope: {exc.errors()[0]['msg']}") from exc


class EventPublisher(Protocol):
    """What a handler publishes through (a service's `deps.events`): Publisher, or MemoryPublisher in unit tests.
    Call it after the write the event announces has committed."""

    async def publish(self, envelope: Envelope) -> None: ...


class CommandSender(Protocol):
    """What a handler sends commands to its own work queue through: CommandQueue, or MemoryCommandQueue."""

    async def send(self, envelope: Envelope) -> None: ...


class Publisher:
    """Publishes to one service's own topic. Call it after the write it announces has committed."""

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self._sns = sns
        self.topic_arn = topic_arn

    async def publish(self, envelope: Envelope) -> None:
        await publish(self._sns, self.topic_arn, envelope)


class MemoryPublisher:
    """The same interface for unit tests: records what would have been published."""

    def __init__(self) -> None:
        self.published: list[Envelope] = []

    async def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)

    def types(self) -> list[str]:
        return [e.type for e in self.published]


class CommandQueue:
    """Sends commands to a service's own work queue."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url

    async def send(self, envelope: Envelope) -> None:
        await send_command(self._sqs, self.queue_url, envelope)


class MemoryCommandQueue:
    def __init__(self) -> None:
        self.sent: list[Envelope] = []

    async def send(self, envelope: Envelope) -> None:
        self.sent.append(envelope)
