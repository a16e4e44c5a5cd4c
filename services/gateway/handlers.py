"""What the gateway does for each auth event it hears, and its catch-up at start. Plain functions of
(message, deps)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from services.gateway import events
from services.gateway.apikeys import ApiKeyCache
from services.gateway.auth_client import RevokedSession
from services.gateway.revocations import RevocationSet
from shared.consumer import PermanentFailure
from shared.events import Envelope
from shared.worker import EventHandler

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class RevocationSource(Protocol):
    """auth's list of recently revoked sessions (services/gateway/auth_client.AuthClient)."""

    async def revoked_sessions(self, since: int) -> list[RevokedSession]: ...


@dataclass
class Deps:
    revocations: RevocationSet
    api_keys: ApiKeyCache
    auth: RevocationSource
    access_token_ttl_s: int  # no token auth signed lives longer: how long a denial has to last at most


def _data(model: type[M], envelope: Envelope) -> M:
    try:
        return model.model_validate(envelope.data)
    except ValidationError as exc:
        raise PermanentFailure(f"{envelope.type} without the fields it needs: {exc.errors()[0]['msg']}") from exc


async def api_key_revoked(envelope: Envelope, deps: Deps) -> None:
    event = _data(events.ApiKeyRevoked, envelope)
    # A token exchanged for the key a moment ago may still be on its way to the cache or in use.
    deps.revocations.deny_api_key(event.key_id, until=time.time() + deps.access_token_ttl_s)
    evicted = deps.api_keys.evict_key(event.key_id)
    log.info("API key revoked", extra={"key_id": event.key_id, "user_id": event.user_id, "evicted": evicted})


async def session_revoked(envelope: Envelope, deps: Deps) -> None:
    event = _data(events.SessionRevoked, envelope)
    deps.revocations.deny_session(event.session_id, until=event.until)
    log.info("session revoked", extra={"session_id": event.session_id, "user_id": event.user_id})


async def user_deleted(envelope: Envelope, deps: Deps) -> None:
    event = _data(events.UserDeleted, envelope)
    deps.revocations.deny_user(event.user_id, until=event.until)
    evicted = deps.api_keys.evict_user(event.user_id)
    log.info("user deleted", extra={"user_id": event.user_id, "evicted": evicted})


EVENT_HANDLERS: dict[str, EventHandler[Deps]] = {
    events.APIKEY_REVOKED: api_key_revoked,
    events.SESSION_REVOKED: session_revoked,
    events.USER_DELETED: user_deleted,
}


async def catch_up(deps: Deps, *, give_up_s: float, first_delay_s: float = 0.2) -> int | None:
    """Deny the sessions auth revoked within an access token's lifetime (a replica's queue only holds what
    happened after it was created). Retries while auth is not up yet; gives up with a warning after
    `give_up_s`. How many sessions it learnt of, or None when it gave up."""
    deadline = time.monotonic() + give_up_s
    delay = first_delay_s
    while True:
        now = int(time.time())
        try:
            sessions = await deps.auth.revoked_sessions(since=now - deps.access_token_ttl_s)
            break
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if time.monotonic() + delay > deadline:
                log.warning("could not catch up on revoked sessions; tokens of sessions signed out before this "
                            "replica started are accepted until they expire", extra={"error": repr(exc)})
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    for session in sessions:
        # Revoked at `now - ttl` or later, so none of its tokens outlives `now + ttl`.
        deps.revocations.deny_session(session.session_id, until=now + deps.access_token_ttl_s)
    log.info("caught up on revoked sessions", extra={"sessions": len(sessions)})
    return len(sessions)
