"""Builds the gateway's dependencies once, and the event feeds each replica runs while it serves.

The gateway publishes no events. It consumes, each on a queue of every replica's own (shared/replica.py:
fan-out, so every replica hears every event; the types come from shared/contracts/resources.py):
- auth's events (`GATEWAY_AUTH_EVENTS`: the payloads are in shared/contracts/auth_events.py), on the queue
  named `GATEWAY_REPLICA_QUEUE_PREFIX` + the replica: revoked API keys and sessions, deleted users, which this
  replica stops honouring at once, ending the live streams they opened (services/gateway/revocations.py
  `ROUTES`). At start it also asks auth for the sessions revoked before its queue existed (`catch_up`);
- files' and training's events (`GATEWAY_FILE_EVENTS`, `GATEWAY_TRAINING_EVENTS`: shared/contracts/files_events.py
  and training_events.py), on the queues named `GATEWAY_LIVE_FILES_QUEUE_PREFIX` and
  `GATEWAY_LIVE_TRAINING_QUEUE_PREFIX` + the replica: relayed to the owner's browsers connected to this replica
  (services/gateway/live.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx

from services.gateway.api_key_exchange import ApiKeyCache
from services.gateway.auth_client import AuthClient
from services.gateway.deps import Deps
from services.gateway.live import LiveHub
from services.gateway.revocations import ROUTES, RevocationSet, catch_up
from services.gateway.settings import Settings
from shared.aws import AwsClients
from shared.contracts.resources import (
    GATEWAY_AUTH_EVENTS,
    GATEWAY_FILE_EVENTS,
    GATEWAY_INFERENCE_EVENTS,
    GATEWAY_TRAINING_EVENTS,
)
from shared.replica import ReplicaQueue
from shared.tokens import JWKSVerifier
from shared.worker import dispatcher

log = logging.getLogger(__name__)


def build_deps(settings: Settings, http: httpx.AsyncClient, hub: LiveHub) -> Deps:
    revocations = RevocationSet()
    auth = AuthClient(http, settings.auth_url, settings.service_token, settings.auth_internal_timeout_s)
    api_keys = ApiKeyCache(
        auth.exchange_api_key, max_age_s=settings.api_key_cache_max_age_s,
        expiry_margin_s=settings.api_key_cache_expiry_margin_s, max_entries=settings.api_key_cache_size,
        negative_ttl_s=settings.api_key_negative_ttl_s,
        refuse=lambda exchanged: revocations.denies(user_id=exchanged.user_id, api_key_id=exchanged.key_id))
    verifier = JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                            http=http, revoked=revocations.is_revoked)
    return Deps(verifier=verifier, api_keys=api_keys, revocations=revocations, auth=auth, live=hub,
                access_token_ttl_s=settings.access_token_ttl_s)


@contextlib.asynccontextmanager
async def revocation_feed(aws: AwsClients, settings: Settings, deps: Deps) -> AsyncIterator[ReplicaQueue]:
    """This replica's queue on auth's events, then the catch-up on what happened before it existed (in
    that order, so that nothing falls between the two). The start waits for the catch-up a little, never
    fails over it: a replica that cannot reach auth yet serves, and keeps trying in the background."""
    queue = ReplicaQueue(aws, topic=settings.auth_events_topic, queue_prefix=settings.replica_queue_prefix,
                         event_types=GATEWAY_AUTH_EVENTS, handle=dispatcher(ROUTES, deps),
                         wait_time_s=settings.replica_poll_s, retention_s=settings.access_token_ttl_s)
    async with queue:
        catching_up = asyncio.create_task(catch_up(deps, give_up_s=settings.revocation_catch_up_give_up_s),
                                          name="revocations-catch-up")
        done, _ = await asyncio.wait({catching_up}, timeout=settings.revocation_catch_up_wait_s)
        if not done:
            log.warning("serving before the catch-up on revoked sessions finished; it goes on in the background")
        try:
            yield queue
        finally:
            catching_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catching_up


@contextlib.asynccontextmanager
async def live_feed(aws: AwsClients, settings: Settings, hub: LiveHub) -> AsyncIterator[None]:
    """This replica's queues on files', training's and inference's events, feeding the browsers connected to it. What
    happened before they existed is not replayed: a client resuming from then is told `resumed: false`."""
    files = ReplicaQueue(aws, topic=settings.files_events_topic, queue_prefix=settings.live_files_queue_prefix,
                         event_types=GATEWAY_FILE_EVENTS, handle=hub.handle, wait_time_s=settings.live_poll_s)
    training = ReplicaQueue(aws, topic=settings.training_events_topic,
                            queue_prefix=settings.live_training_queue_prefix, event_types=GATEWAY_TRAINING_EVENTS,
                            handle=hub.handle, wait_time_s=settings.live_poll_s)
    inference = ReplicaQueue(aws, topic=settings.inference_events_topic,
                             queue_prefix=settings.live_inference_queue_prefix, event_types=GATEWAY_INFERENCE_EVENTS,
                             handle=hub.handle, wait_time_s=settings.live_poll_s)
    async with files, training, inference:
        yield
