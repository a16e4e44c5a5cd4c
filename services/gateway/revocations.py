"""What this gateway replica refuses although the token's signature is good: signed-out sessions, revoked
API keys, deleted users. Held in memory (`RevocationSet`), fed by auth's events (`ROUTES`: plain functions of
(event, deps)) and, at start, by a catch-up on what happened before the replica's queue existed (`catch_up`).
A revocation also ends this replica's open event streams that it authenticated (services/gateway/live.py).

An entry only has to outlive the tokens it denies, so each one carries an `until` (unix seconds) and goes
after it, plus a margin for clock skew between auth and the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import httpx

from services.gateway.deps import Deps
from shared.contracts.auth_events import ApiKeyRevoked, SessionRevoked, UserDeleted
from shared.tokens import Principal
from shared.worker import Route, on

log = logging.getLogger(__name__)

Kind = Literal["session", "user", "api_key"]


class RevocationSet:
    def __init__(self, *, clock: Callable[[], float] = time.time, skew_s: float = 60.0,
                 prune_every_s: float = 60.0) -> None:
        self._clock = clock
        self._skew_s = skew_s
        self._prune_every_s = prune_every_s
        self._denied: dict[tuple[Kind, str], float] = {}
        self._pruned_at = clock()

    def deny(self, kind: Kind, ident: str, until: float) -> None:
        key = (kind, ident)
        self._denied[key] = max(self._denied.get(key, 0.0), until + self._skew_s)
        self._prune()

    def deny_session(self, session_id: str, until: float) -> None:
        self.deny("session", session_id, until)

    def deny_user(self, user_id: str, until: float) -> None:
        self.deny("user", user_id, until)

    def deny_api_key(self, key_id: str, until: float) -> None:
        self.deny("api_key", key_id, until)

    def denies(self, *, session_id: str | None = None, user_id: str | None = None,
               api_key_id: str | None = None) -> bool:
        now = self._clock()
        candidates: list[tuple[Kind, str | None]] = [("session", session_id), ("user", user_id),
                                                     ("api_key", api_key_id)]
        return any(ident is not None and self._denied.get((kind, ident), 0.0) > now for kind, ident in candidates)

    async def is_revoked(self, principal: Principal) -> bool:
        """The `revoked=` check of the gateway's token verifier."""
        return self.denies(session_id=principal.session_id, user_id=principal.user_id,
                           api_key_id=principal.api_key_id)

    def __len__(self) -> int:
        return len(self._denied)

    def _prune(self) -> None:
        now = self._clock()
        if now - self._pruned_at < self._prune_every_s:
            return
        self._pruned_at = now
        self._denied = {key: until for key, until in self._denied.items() if until > now}


# ---- auth's events ----------------------------------------------------------------------------------------

async def api_key_revoked(event: ApiKeyRevoked, deps: Deps) -> None:
    # A token exchanged for the key a moment ago may still be on its way to the cache or in use.
    deps.revocations.deny_api_key(event.key_id, until=time.time() + deps.access_token_ttl_s)
    evicted = deps.api_keys.evict_key(event.key_id)
    ended = deps.live.end(event.user_id, api_key_id=event.key_id)
    log.info("API key revoked", extra={"key_id": event.key_id, "user_id": event.user_id, "evicted": evicted,
                                       "streams_ended": ended})


async def session_revoked(event: SessionRevoked, deps: Deps) -> None:
    deps.revocations.deny_session(event.session_id, until=event.until)
    ended = deps.live.end(event.user_id, session_id=event.session_id)
    log.info("session revoked", extra={"session_id": event.session_id, "user_id": event.user_id,
                                       "streams_ended": ended})


async def user_deleted(event: UserDeleted, deps: Deps) -> None:
    deps.revocations.deny_user(event.user_id, until=event.until)
    evicted = deps.api_keys.evict_user(event.user_id)
    ended = deps.live.end(event.user_id)
    log.info("user deleted", extra={"user_id": event.user_id, "evicted": evicted, "streams_ended": ended})


ROUTES: tuple[Route[Deps], ...] = (
    on(ApiKeyRevoked, api_key_revoked),
    on(SessionRevoked, session_revoked),
    on(UserDeleted, user_deleted),
)


# ---- the catch-up at start --------------------------------------------------------------------------------

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
