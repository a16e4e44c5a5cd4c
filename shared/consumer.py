"""The one SQS consumer loop every worker runs.

Long polling; each message handled on its own and deleted only when handled, up to `max_in_flight` at once
(a long handler, an evaluation say, never holds the messages behind it: the loop receives more while it
runs); the visibility timeout extended while a long handler runs; duplicates dropped through the inbox; a
failing message retried with backoff and moved to the DLQ after `max_receives`; SIGTERM finishes what is in
hand and stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from shared.envelope import Envelope, MalformedMessage, parse_wire
from shared.errors import is_throttling
from shared.inbox import Claim, Inbox
from shared.logging import bound_request_id

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]
RETRY_ATTRIBUTE = "retry_attempt"
def _retry_attempt(message: dict[str, Any]) -> int:
    attribute = (message.get("MessageAttributes") or {}).get(RETRY_ATTRIBUTE) or {}
    try:
        return int(attribute.get("StringValue", "0"))
    except ValueError:
        return 0


class RetryLater(Exception):
    """A handler is not ready to handle this message yet (e.g. a projection has not caught up)."""

    def __init__(self, reason: str, delay_s: int | None = None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class PermanentFailure(Exception):
    """Retrying cannot help: send the message to the DLQ at once."""


class InvalidPayload(PermanentFailure):
    """The message's data does not parse into its type's contract model (shared/contracts/): no retry can fix it."""

    def __init__(self, event_type: str, errors: str) -> None:
        super().__init__(f"{event_type} payload does not match its contract: {errors}")
        self.event_type = event_type
        self.errors = errors


@dataclass(frozen=True)
class RetryPlan:
    to_dlq: bool
    delay_s: int


def plan_retry(receive_count: int, max_receives: int, *, permanent: bool = False,
               requested_delay_s: int | None = None, base_s: int = 2, cap_s: int = 300) -> RetryPlan:
    """What to do with a message whose handling failed on its `receive_count`-th delivery."""
    if permanent or receive_count >= max_receives:
        return RetryPlan(to_dlq=True, delay_s=0)
    if requested_delay_s is not None:
        return RetryPlan(to_dlq=False, delay_s=max(0, min(requested_delay_s, cap_s)))
    return RetryPlan(to_dlq=False, delay_s=min(cap_s, base_s ** receive_count))


@dataclass
class ConsumerConfig:
    queue_url: str
    dlq_url: str | None
    max_receives: int = 5
    wait_time_s: int = 20
    visibility_timeout_s: int = 60
    batch_size: int = 10
    max_in_flight: int = 20  # messages being handled at once; the loop receives more as each one ends
    # How many times a handler may say "not ready yet" (RetryLater) before the message is dead-lettered.
    max_not_ready_retries: int = 30


class Consumer:
    def __init__(self, sqs: Any, config: ConsumerConfig, handle: Handler, inbox: Inbox | None = None) -> None:
        self._sqs = sqs
        self._config = config
        self._handle = handle
        self._inbox = inbox
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        log.info("consumer started", extra={"queue": self._config.queue_url})
        in_flight: set[asyncio.Task[None]] = set()
        while not self._stopping.is_set():
            room = self._config.max_in_flight - len(in_flight)
            if room <= 0:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            # One message's failure is that message's alone; the others go on.
            for message in await self._receive(max_messages=min(room, self._config.batch_size)):
                task = asyncio.create_task(self._process(message))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        if in_flight:  # SIGTERM: finish what is in hand
            await asyncio.gather(*in_flight, return_exceptions=True)
        log.info("consumer stopped", extra={"queue": self._config.queue_url})

    async def run_until_idle(self, idle_polls: int = 1) -> int:
        """Drain the queue and return how many messages were seen (for tests and one-shot runs)."""
        seen, idle = 0, 0
        while idle < idle_polls:
            messages = await self._receive(wait_time_s=1)
            idle = 0 if messages else idle + 1
            seen += len(messages)
            await asyncio.gather(*(self._process(m) for m in messages))
        return seen

    async def _receive(self, wait_time_s: int | None = None, max_messages: int | None = None) -> list[dict[str, Any]]:
        receive = asyncio.ensure_future(self._sqs.receive_message(
            QueueUrl=self._config.queue_url, MaxNumberOfMessages=max_messages or self._config.batch_size,
            WaitTimeSeconds=self._config.wait_time_s if wait_time_s is None else wait_time_s,
            VisibilityTimeout=self._config.visibility_timeout_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["All"],
        ))
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if receive not in done:
            receive.cancel()  # SIGTERM during a long poll: nothing was received, nothing is lost
            return []
        try:
            return list(receive.result().get("Messages", []))
        except Exception:
            log.exception("receive failed; backing off")
            await asyncio.sleep(1)
            return []

    async def _process(self, message: dict[str, Any]) -> None:
        receipt = message["ReceiptHandle"]
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            envelope = parse_wire(message["Body"])
        except MalformedMessage as exc:
            log.error("malformed message", extra={"message_id": message.get("MessageId"), "error": str(exc)})
            await self._dead_letter(message, reason=str(exc))
            return
        envelope._retries = _retry_attempt(message)
        with bound_request_id(envelope.correlation_id):
            try:
                await self._process_envelope(message, envelope, receipt, receive_count)
            except Exception:
                # What was done could not be recorded (the inbox, the delete, a retry's copy: AWS throttled or
                # failed): the message comes back when its visibility ends and the inbox decides what then.
                log.exception("message left to come back", extra={"event_id": envelope.id,
                                                                  "event_type": envelope.type})

    async def _process_envelope(self, message: dict[str, Any], envelope: Envelope, receipt: str,
                                receive_count: int) -> None:
        ctx = {"event_id": envelope.id, "event_type": envelope.type, "receive_count": receive_count}
        if self._inbox is not None:
            claim = await self._inbox.claim(envelope.id, lease_s=self._config.visibility_timeout_s)
            if claim is Claim.DONE:
                log.info("duplicate message dropped", extra=ctx)
                await self._delete(receipt)
                return
            if claim is Claim.BUSY:
                await self._change_visibility(receipt, self._config.visibility_timeout_s)
                return
        heartbeat = asyncio.create_task(self._keep_invisible(receipt))
        try:
            await self._handle(envelope)
        except RetryLater as exc:
            await self._release(envelope)
            await self._retry_later(message, envelope, exc)
            return
        except InvalidPayload as exc:
            await self._release(envelope)
            outcome = "dead-lettered" if self._config.dlq_url else "dropped (this queue has no DLQ)"
            log.error(f"payload does not match its contract; {outcome}",
                      extra={**ctx, "message_id": message.get("MessageId"), "error": exc.errors})
            await self._dead_letter(message, str(exc))
            return
        except Exception as exc:
            await self._release(envelope)
            if is_throttling(exc):  # AWS asked us to slow down: waiting, like "not ready", spends no receives
                await self._retry_later(message, envelope, RetryLater(f"throttled: {exc}"))
                return
            plan = plan_retry(receive_count, self._config.max_receives,
                              permanent=isinstance(exc, PermanentFailure))
            log.exception("handler failed", extra={**ctx, "to_dlq": plan.to_dlq, "delay_s": plan.delay_s})
            await self._after_failure(message, receipt, plan, repr(exc))
            return
        finally:
            heartbeat.cancel()
        if self._inbox is not None:
            await self._inbox.complete(envelope.id)
        await self._delete(receipt)
        log.info("message handled", extra=ctx)

    async def _retry_later(self, message: dict[str, Any], envelope: Envelope, exc: RetryLater) -> None:
        """Not ready is not a failure: re-send a delayed copy that counts its own attempts, so waiting does
        not use up the queue's receive budget (which SQS's redrive policy enforces too)."""
        attempt = envelope.retries + 1
        ctx = {"event_id": envelope.id, "event_type": envelope.type, "attempt": attempt, "reason": str(exc)}
        if attempt > self._config.max_not_ready_retries:
            log.error("message never became ready; dead-lettered", extra=ctx)
            await self._dead_letter(message, f"not ready after {attempt - 1} retries: {exc}")
            return
        delay = exc.delay_s if exc.delay_s is not None else plan_retry(attempt, attempt + 1).delay_s
        attributes = dict(message.get("MessageAttributes") or {})
        attributes[RETRY_ATTRIBUTE] = {"DataType": "Number", "StringValue": str(attempt)}
        await self._sqs.send_message(QueueUrl=self._config.queue_url, MessageBody=message["Body"],
                                     MessageAttributes=attributes, DelaySeconds=max(0, min(delay, 900)))
        await self._delete(message["ReceiptHandle"])
        log.info("message not ready; retrying later", extra={**ctx, "delay_s": delay})

    async def _after_failure(self, message: dict[str, Any], receipt: str, plan: Any, reason: str) -> None:
        if plan.to_dlq:
            await self._dead_letter(message, reason)
        else:
            await self._change_visibility(receipt, plan.delay_s)

    async def _release(self, envelope: Envelope) -> None:
        if self._inbox is not None:
            await self._inbox.release(envelope.id)

    async def _keep_invisible(self, receipt: str) -> None:
        period = max(1, self._config.visibility_timeout_s // 2)
        while True:
            await asyncio.sleep(period)
            await self._change_visibility(receipt, self._config.visibility_timeout_s)

    async def _dead_letter(self, message: dict[str, Any], reason: str) -> None:
        if self._config.dlq_url:
            attributes = dict(message.get("MessageAttributes") or {})
            attributes["dead_letter_reason"] = {"DataType": "String", "StringValue": reason[:1000]}
            await self._sqs.send_message(QueueUrl=self._config.dlq_url, MessageBody=message["Body"],
                                         MessageAttributes=attributes)
        await self._delete(message["ReceiptHandle"])

    async def _delete(self, receipt: str) -> None:
        await self._sqs.delete_message(QueueUrl=self._config.queue_url, ReceiptHandle=receipt)

    async def _change_visibility(self, receipt: str, seconds: int) -> None:
        try:
            await self._sqs.change_message_visibility(QueueUrl=self._config.queue_url,
                                                      ReceiptHandle=receipt, VisibilityTimeout=seconds)
        except Exception:
            log.warning("could not change visibility", exc_info=True)
