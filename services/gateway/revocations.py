"""What this gateway replica refuses although the token's signature is good: signed-out sessions, revoked
API keys, deleted users. Held in memory, fed by auth's events (and a catch-up at start).

An entry only has to outlive the tokens it denies, so each one carries an `until` (unix seconds) and goes
after it, plus a margin for clock skew between auth and the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from shared.tokens import Principal

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
