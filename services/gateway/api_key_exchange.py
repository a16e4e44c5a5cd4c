"""API keys at the gateway: a program's `sk-...` key is traded once with auth for a short access token,
which is cached and forwarded in the key's place, so every service verifies a JWT as for a person.

The cache is keyed by the key's SHA-256 (the key itself is never held), bounded (least recently used goes
first), reuses a token until shortly before it expires and for at most `max_age_s`, and lets concurrent
first requests for one key share a single exchange. A key auth refused is remembered briefly too. A
revoked key's entries are evicted by key id, a deleted user's by user id.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.errors import Unauthorized

API_KEY_PREFIX = "sk-"
MAX_KEY_CHARS = 200  # what auth's exchange accepts


def is_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


class InvalidApiKey(Unauthorized):
    def __init__(self, message: str = "Incorrect API key provided.") -> None:
        super().__init__(message, code="invalid_api_key")


@dataclass(frozen=True)
class Exchanged:
    access_token: str
    expires_in: int
    user_id: str
    key_id: str


Exchange = Callable[[str], Awaitable[Exchanged]]  # raises InvalidApiKey for a key auth refuses


@dataclass
class _Entry:
    exchanged: Exchanged | None  # None: auth refused the key
    fresh_until: float


class ApiKeyCache:
    def __init__(self, exchange: Exchange, *, max_age_s: float = 60.0, expiry_margin_s: float = 30.0,
                 max_entries: int = 10_000, negative_ttl_s: float = 5.0,
                 refuse: Callable[[Exchanged], bool] = lambda _: False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._exchange = exchange
        self._max_age_s = max_age_s
        self._expiry_margin_s = expiry_margin_s
        self._max_entries = max_entries
        self._negative_ttl_s = negative_ttl_s
        self._refuse = refuse  # a revocation heard while the exchange was on its way
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_key_id: dict[str, set[str]] = {}
        self._in_flight: dict[str, asyncio.Task[Exchanged]] = {}

    async def access_token(self, key: str) -> str:
        """The access token to forward for `key`; InvalidApiKey when auth does not know it."""
        body = key[len(API_KEY_PREFIX):]
        if len(key) > MAX_KEY_CHARS or not (body.isascii() and body.isalnum()):
            raise InvalidApiKey()
        digest = hashlib.sha256(key.encode()).hexdigest()
        entry = self._fresh(digest)
        if entry is not None:
            if entry.exchanged is None:
                raise InvalidApiKey()
            return entry.exchanged.access_token
        flight = self._in_flight.get(digest)
        if flight is None:
            flight = asyncio.create_task(self._exchange_and_store(digest, key))
            self._in_flight[digest] = flight
            flight.add_done_callback(lambda done: self._landed(digest, done))
        # Shielded: a caller that goes away (client disconnected) does not cancel the others' exchange.
        return (await asyncio.shield(flight)).access_token

    def _landed(self, digest: str, flight: asyncio.Task[Exchanged]) -> None:
        self._in_flight.pop(digest, None)
        if not flight.cancelled():
            flight.exception()  # retrieved here too, in case every caller went away before it landed

    async def _exchange_and_store(self, digest: str, key: str) -> Exchanged:
        try:
            exchanged = await self._exchange(key)
        except InvalidApiKey:
            self._store(digest, _Entry(None, self._clock() + self._negative_ttl_s))
            raise
        if self._refuse(exchanged):
            raise InvalidApiKey("This API key was revoked.")
        lifetime = min(self._max_age_s, exchanged.expires_in - self._expiry_margin_s)
        if lifetime > 0:
            self._store(digest, _Entry(exchanged, self._clock() + lifetime))
        return exchanged

    def _fresh(self, digest: str) -> _Entry | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.fresh_until <= self._clock():
            self._remove(digest)
            return None
        self._entries.move_to_end(digest)
        return entry

    def _store(self, digest: str, entry: _Entry) -> None:
        self._remove(digest)
        self._entries[digest] = entry
        if entry.exchanged is not None:
            self._by_key_id.setdefault(entry.exchanged.key_id, set()).add(digest)
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))

    def _remove(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is None or entry.exchanged is None:
            return
        digests = self._by_key_id.get(entry.exchanged.key_id)
        if digests is not None:
            digests.discard(digest)
            if not digests:
                del self._by_key_id[entry.exchanged.key_id]

    def evict_key(self, key_id: str) -> int:
        """Forget the key's exchanged tokens (it was revoked); how many entries went."""
        digests = list(self._by_key_id.get(key_id, ()))
        for digest in digests:
            self._remove(digest)
        return len(digests)

    def evict_user(self, user_id: str) -> int:
        """Forget every key of a user (the account was deleted). Rare, so a scan is fine."""
        digests = [d for d, e in self._entries.items() if e.exchanged is not None and e.exchanged.user_id == user_id]
        for digest in digests:
            self._remove(digest)
        return len(digests)

    def __len__(self) -> int:
        return len(self._entries)
