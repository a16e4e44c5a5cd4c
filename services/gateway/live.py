"""Live updates for the web app: Server-Sent Events at `GET /api/events`, each person only their own.

Every gateway replica hears the files and training events on queues of its own (shared/replica.py, fan-out:
a browser may be connected to any replica) and hands each event to the streams of its user on this replica.
A short replay buffer per user lets a dropped connection resume from `Last-Event-ID` on whichever replica it
lands: an event's id is its `occurred_at` in milliseconds and its envelope id, the same on every replica, so
a replica replays what it holds after that instant, starting a little earlier (`REPLAY_SLACK_MS`) because
services' clocks and deliveries do not line up exactly; the client drops ids it has already seen. When the
buffer cannot vouch for the gap (the replica started later, or the gap is older than what it keeps) the
`ready` message says `resumed: false` and the client reloads what it shows.

Each event's data is parsed into its contract model (shared/contracts/files_events.py, training_events.py)
before it is relayed; a payload that does not parse is a permanent failure (InvalidPayload), never sent to a
browser. What a browser gets is the event as published: `{id, type, occurred_at, data}`.

A stream ends when its access token expires; the client reconnects with a fresh one. It also ends as soon as
what authenticated it is revoked (`LiveHub.end`, called by services/gateway/revocations.py on auth's events:
the session signed out, the API key revoked, the user deleted): the reconnection is refused. A slow client
whose queue fills up is cut off (it reconnects and resumes) instead of growing the gateway's memory.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from shared.contracts import files_events, inference_events, training_events
from shared.contracts.files_events import FileEvent
from shared.contracts.inference_events import DeploymentEvent, EvaluationEvent
from shared.contracts.training_events import JobMetrics, JobStatusEvent
from shared.envelope import Envelope
from shared.worker import parse_payload

log = logging.getLogger(__name__)

# Every event relayed to browsers: what the replica's live queues subscribe to (shared/contracts/resources.py
# GATEWAY_FILE_EVENTS, GATEWAY_TRAINING_EVENTS), each with its contract model. Each one names its user.
RELAYED_MODELS: tuple[type[FileEvent | JobStatusEvent | JobMetrics | DeploymentEvent | EvaluationEvent], ...] = (
    files_events.FileUploaded, files_events.FileValidated, files_events.FileRejected, files_events.FileDeleted,
    *training_events.JOB_STATUS_EVENTS.values(), training_events.JobMetrics,
    *inference_events.DEPLOYMENT_STATUS_EVENTS.values(), *inference_events.EVALUATION_STATUS_EVENTS.values())
RELAYED = {model.TYPE: model for model in RELAYED_MODELS}

REPLAY_SLACK_MS = 5_000
KEEPALIVE_S = 15.0
RETRY_MS = 3_000


@dataclass(frozen=True)
class Credential:
    """What authenticated a stream: a signed-in person's session, or a program's API key."""

    session_id: str | None = None
    api_key_id: str | None = None


@dataclass(frozen=True, order=True)
class LiveEvent:
    cursor: str  # "<occurred_at ms, 13 digits>-<envelope id>": sorts by time on every replica
    type: str = field(compare=False)
    payload: str = field(compare=False)  # the JSON sent as `data:`

    @property
    def at_ms(self) -> int:
        return cursor_ms(self.cursor) or 0

    def frame(self) -> str:
        return f"id: {self.cursor}\nevent: {self.type}\ndata: {self.payload}\n\n"


def cursor_ms(cursor: str | None) -> int | None:
    head = (cursor or "").partition("-")[0]
    return int(head) if head.isdigit() and len(head) == 13 else None


def live_event(envelope: Envelope) -> LiveEvent:
    ms = int(envelope.occurred_at.timestamp() * 1000)
    payload = json.dumps({"id": envelope.id, "type": envelope.type,
                          "occurred_at": envelope.occurred_at.isoformat(), "data": envelope.data},
                         separators=(",", ":"), default=str)
    return LiveEvent(f"{ms:013d}-{envelope.id}", envelope.type, payload)


def owner_of(envelope: Envelope) -> str | None:
    """Whose browsers get the event: the envelope's user, else its payload's (InvalidPayload when the payload
    does not match its contract); None for a type that is not relayed."""
    model = RELAYED.get(envelope.type)
    if model is None:
        return None
    event = parse_payload(envelope, model)
    return envelope.user_id or event.user_id or None


class LiveHub:
    """This replica's connected streams by user, and each user's recent events (for resuming)."""

    def __init__(self, *, buffer_per_user: int = 500, keep_s: float = 900.0, max_users: int = 10_000,
                 queue_size: int = 1_000, clock: Callable[[], float] = time.time) -> None:
        self._buffer_per_user, self._keep_ms = buffer_per_user, int(keep_s * 1000)
        self._max_users, self._queue_size, self._clock = max_users, queue_size, clock
        self._started_ms = int(clock() * 1000)
        self._forgot_ms = 0
        self._recent: dict[str, deque[LiveEvent]] = {}
        self._horizon: dict[str, int] = {}  # per user: the newest event dropped from the buffer (ms)
        self._streams: dict[str, set[asyncio.Queue[LiveEvent | None]]] = {}
        self._credentials: dict[asyncio.Queue[LiveEvent | None], Credential] = {}  # what opened each stream

    async def handle(self, envelope: Envelope) -> None:
        """The replica queue's handler: remember the event and pass it to the user's open streams."""
        user = owner_of(envelope)
        if user is None:
            log.warning("live event not relayed or without a user; dropped", extra={"event_type": envelope.type})
            return
        event = live_event(envelope)
        recent = self._recent.pop(user, None) or deque(maxlen=self._buffer_per_user)
        if len(recent) == recent.maxlen:
            self._horizon[user] = max(self._horizon.get(user, 0), recent.popleft().at_ms)
        bisect.insort(recent, event)  # arrivals are nearly in time order: this is an append
        self._recent[user] = recent  # most recently active users last: the oldest go first when full
        while len(self._recent) > self._max_users:
            self._horizon.pop(forgotten := next(iter(self._recent)), None)
            self._recent.pop(forgotten)
            self._forgot_ms = int(self._clock() * 1000)
        for queue in list(self._streams.get(user, ())):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:  # a client that does not read: cut it off, it resumes on reconnect
                self._drop(user, queue)
                _replace_with_end(queue)

    def replay(self, user: str, last_event_id: str | None) -> tuple[list[LiveEvent], bool]:
        """What to send before the live events, and whether that covers everything since `last_event_id`."""
        last_ms = cursor_ms(last_event_id)
        if last_ms is None:
            return [], False
        now_ms = int(self._clock() * 1000)
        recent = self._recent.get(user) or deque()
        # What this replica may have lost: before it started, past the keep time, dropped from a full buffer,
        # or a whole user forgotten when too many were active (then nobody's gap before that is vouched for).
        horizon = max(self._started_ms, now_ms - self._keep_ms, self._horizon.get(user, 0), self._forgot_ms)
        covered = last_ms >= horizon
        since = max(last_ms - REPLAY_SLACK_MS, now_ms - self._keep_ms)
        return [e for e in recent if e.at_ms > since and e.cursor != last_event_id], covered

    def open(self, user: str, credential: Credential | None = None) -> asyncio.Queue[LiveEvent | None]:
        queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(maxsize=self._queue_size)
        self._streams.setdefault(user, set()).add(queue)
        self._credentials[queue] = credential or Credential()
        return queue

    def end(self, user_id: str, *, session_id: str | None = None, api_key_id: str | None = None) -> int:
        """End the user's streams opened with that session or API key (all of them when neither is given):
        it was revoked. How many ended."""
        ended = 0
        for queue in list(self._streams.get(user_id, ())):
            credential = self._credentials.get(queue, Credential())
            if session_id is not None and credential.session_id != session_id:
                continue
            if api_key_id is not None and credential.api_key_id != api_key_id:
                continue
            self._drop(user_id, queue)
            _end(queue)
            ended += 1
        return ended

    def close(self, user: str, queue: asyncio.Queue[LiveEvent | None]) -> None:
        self._drop(user, queue)

    def _drop(self, user: str, queue: asyncio.Queue[LiveEvent | None]) -> None:
        self._credentials.pop(queue, None)
        streams = self._streams.get(user)
        if streams is not None:
            streams.discard(queue)
            if not streams:
                del self._streams[user]

    def close_all(self) -> None:
        """The replica is stopping: end every stream now (their clients reconnect to another replica and
        resume), since a server waits for open requests before it stops and these never end by themselves."""
        for user, queues in list(self._streams.items()):
            for queue in list(queues):
                self._drop(user, queue)
                _end(queue)

    def connected(self, user: str) -> int:
        return len(self._streams.get(user, ()))


def _end(queue: asyncio.Queue[LiveEvent | None]) -> None:
    try:
        queue.put_nowait(None)
    except asyncio.QueueFull:
        _replace_with_end(queue)


def _replace_with_end(queue: asyncio.Queue[LiveEvent | None]) -> None:
    """Make room for the end marker in a full queue: the client reconnects and resumes anyway."""
    try:
        queue.get_nowait()
    except asyncio.QueueEmpty:
        pass
    queue.put_nowait(None)


async def stream(hub: LiveHub, user: str, last_event_id: str | None, until: float,
                 clock: Callable[[], float] = time.time, keepalive_s: float = KEEPALIVE_S,
                 credential: Credential | None = None,
                 revoked: Callable[[], bool] = lambda: False) -> AsyncGenerator[str, None]:
    """The SSE body: `retry`, `ready` {resumed}, the replay, then live events and keep-alive comments, until
    the access token's expiry (`until`, unix seconds) or until `hub.end` for the stream's `credential`.
    `revoked`: whether the credential was revoked after it was checked and before the stream was open (the
    revocation found no stream to end then)."""
    queue = hub.open(user, credential)  # before the replay: an event arriving meanwhile is in one or the other
    try:
        if revoked():
            return
        replayed, covered = hub.replay(user, last_event_id)
        yield f"retry: {RETRY_MS}\n\n"
        yield f"event: ready\ndata: {json.dumps({'resumed': covered})}\n\n"
        sent = set()
        for event in replayed:
            sent.add(event.cursor)
            yield event.frame()
        while True:
            left = until - clock()
            if left <= 0:
                return
            try:
                item = await asyncio.wait_for(queue.get(), timeout=min(keepalive_s, left))
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is None:
                return
            if item.cursor not in sent:
                yield item.frame()
    finally:
        hub.close(user, queue)
