"""The gateway's API-key cache (reuse, expiry, single flight, bounds, eviction), its revocation set, the
handlers that feed it from auth's events, the start-up catch-up, and the routes it never proxies."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.gateway import routing
from services.gateway.api_key_exchange import ApiKeyCache, Exchanged, InvalidApiKey
from services.gateway.auth_client import AuthUnavailable, RevokedSession
from services.gateway.deps import Deps
from services.gateway.live import Credential, LiveHub
from services.gateway.revocations import ROUTES, RevocationSet, catch_up
from shared.consumer import InvalidPayload
from shared.contracts.auth_events import SESSION_REVOKED, ApiKeyRevoked, SessionRevoked, UserDeleted
from shared.contracts.resources import GATEWAY_AUTH_EVENTS, GATEWAY_REPLICA_QUEUE_PREFIX
from shared.envelope import Envelope, new_event
from shared.errors import Unauthorized
from shared.replica import MAX_QUEUE_NAME, replica_id, replica_queue_name
from shared.tokens import Principal
from shared.worker import dispatcher

KEY_A = "sk-" + "a" * 48
KEY_B = "sk-" + "b" * 48
KEY_C = "sk-" + "c" * 48


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeAuth:
    """auth's exchange and revocation list: counts calls, can be held back, can fail."""

    def __init__(self, *, expires_in: int = 300) -> None:
        self.expires_in = expires_in
        self.exchanges: list[str] = []
        self.valid = {KEY_A: ("key_a", "user_1"), KEY_B: ("key_b", "user_1"), KEY_C: ("key_c", "user_2")}
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None
        self.revoked: list[RevokedSession] = []
        self.revocation_failures = 0

    async def exchange_api_key(self, key: str) -> Exchanged:
        self.exchanges.append(key)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        if key not in self.valid:
            raise InvalidApiKey()
        key_id, user_id = self.valid[key]
        return Exchanged(access_token=f"jwt-{key_id}-{len(self.exchanges)}", expires_in=self.expires_in,
                         user_id=user_id, key_id=key_id)

    async def revoked_sessions(self, since: int) -> list[RevokedSession]:
        if self.revocation_failures > 0:
            self.revocation_failures -= 1
            raise httpx.ConnectError("auth is not up yet")
        return self.revoked


def _cache(auth: FakeAuth, clock: Clock | None = None, **kw: Any) -> ApiKeyCache:
    return ApiKeyCache(auth.exchange_api_key, clock=clock or Clock(), **kw)


# ---- the API-key cache ------------------------------------------------------------------------------------

async def test_a_key_is_exchanged_once_and_its_token_reused_until_max_age() -> None:
    auth, clock = FakeAuth(), Clock()
    cache = _cache(auth, clock, max_age_s=60)
    first = await cache.access_token(KEY_A)
    clock.now += 59
    assert await cache.access_token(KEY_A) == first
    assert len(auth.exchanges) == 1
    clock.now += 2
    assert await cache.access_token(KEY_A) != first
    assert len(auth.exchanges) == 2


async def test_a_token_is_not_reused_close_to_its_expiry() -> None:
    auth, clock = FakeAuth(expires_in=40), Clock()
    cache = _cache(auth, clock, max_age_s=60, expiry_margin_s=30)
    await cache.access_token(KEY_A)
    clock.now += 11  # 40 s token, 30 s margin: fresh for 10 s only
    await cache.access_token(KEY_A)
    assert len(auth.exchanges) == 2


async def test_a_token_too_short_lived_to_cache_is_used_but_not_kept() -> None:
    auth = FakeAuth(expires_in=20)
    cache = _cache(auth, expiry_margin_s=30)
    assert await cache.access_token(KEY_A)
    assert len(cache) == 0


async def test_concurrent_first_requests_share_one_exchange() -> None:
    auth = FakeAuth()
    auth.gate = asyncio.Event()
    cache = _cache(auth)
    waiting = [asyncio.create_task(cache.access_token(KEY_A)) for _ in range(20)]
    await asyncio.sleep(0)
    auth.gate.set()
    tokens = await asyncio.gather(*waiting)
    assert len(set(tokens)) == 1 and auth.exchanges == [KEY_A]


async def test_a_caller_that_goes_away_does_not_cancel_the_others_exchange() -> None:
    auth = FakeAuth()
    auth.gate = asyncio.Event()
    cache = _cache(auth)
    first = asyncio.create_task(cache.access_token(KEY_A))
    second = asyncio.create_task(cache.access_token(KEY_A))
    await asyncio.sleep(0)
    first.cancel()
    auth.gate.set()
    assert (await second).startswith("jwt-key_a")
    assert first.cancelled() and len(auth.exchanges) == 1


async def test_a_failed_exchange_fails_every_waiter_and_is_not_cached() -> None:
    auth = FakeAuth()
    auth.gate, auth.fail_with = asyncio.Event(), AuthUnavailable()
    cache = _cache(auth)
    waiting = [asyncio.create_task(cache.access_token(KEY_A)) for _ in range(3)]
    await asyncio.sleep(0)
    auth.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, AuthUnavailable) for r in results) and len(auth.exchanges) == 1
    auth.fail_with = None
    assert await cache.access_token(KEY_A)  # auth is back: asked again
    assert len(auth.exchanges) == 2


async def test_a_refused_key_is_refused_again_without_asking_for_a_while() -> None:
    auth, clock = FakeAuth(), Clock()
    cache = _cache(auth, clock, negative_ttl_s=5)
    unknown = "sk-" + "z" * 48
    for _ in range(3):
        with pytest.raises(InvalidApiKey):
            await cache.access_token(unknown)
    assert auth.exchanges == [unknown]
    clock.now += 6
    with pytest.raises(InvalidApiKey):
        await cache.access_token(unknown)
    assert len(auth.exchanges) == 2


@pytest.mark.parametrize("key", ["sk-", "sk-has spaces", "sk-" + "a" * 300, "sk-ünïcödé"])
async def test_a_malformed_key_is_refused_without_asking_auth(key: str) -> None:
    auth = FakeAuth()
    with pytest.raises(InvalidApiKey) as refused:
        await _cache(auth).access_token(key)
    assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
    assert auth.exchanges == []


async def test_the_cache_is_bounded_and_drops_the_least_recently_used_key() -> None:
    auth = FakeAuth()
    cache = _cache(auth, max_entries=2)
    await cache.access_token(KEY_A)
    await cache.access_token(KEY_B)
    await cache.access_token(KEY_A)  # A is now the most recently used
    await cache.access_token(KEY_C)
    assert len(cache) == 2
    await cache.access_token(KEY_A)
    await cache.access_token(KEY_B)  # B went, so it is exchanged again
    assert auth.exchanges == [KEY_A, KEY_B, KEY_C, KEY_B]


async def test_evicting_a_key_id_or_a_user_forgets_their_tokens() -> None:
    auth = FakeAuth()
    cache = _cache(auth)
    for key in (KEY_A, KEY_B, KEY_C):
        await cache.access_token(key)
    assert cache.evict_key("key_a") == 1 and cache.evict_key("key_a") == 0
    assert cache.evict_user("user_2") == 1
    assert len(cache) == 1
    await cache.access_token(KEY_A)
    await cache.access_token(KEY_B)
    assert auth.exchanges == [KEY_A, KEY_B, KEY_C, KEY_A]


async def test_an_exchange_that_lands_after_its_key_was_revoked_is_refused_and_not_cached() -> None:
    auth = FakeAuth()
    revocations = RevocationSet()
    cache = ApiKeyCache(auth.exchange_api_key,
                        refuse=lambda e: revocations.denies(user_id=e.user_id, api_key_id=e.key_id))
    auth.gate = asyncio.Event()
    pending = asyncio.create_task(cache.access_token(KEY_A))
    await asyncio.sleep(0)
    revocations.deny_api_key("key_a", until=time.time() + 900)  # heard while the exchange was on its way
    auth.gate.set()
    with pytest.raises(InvalidApiKey):
        await pending
    assert len(cache) == 0


# ---- the revocation set -----------------------------------------------------------------------------------

def test_a_revoked_session_is_denied_until_its_tokens_have_expired() -> None:
    clock = Clock(10_000)
    revocations = RevocationSet(clock=clock, skew_s=60)
    revocations.deny_session("ses_1", until=10_900)
    assert revocations.denies(session_id="ses_1") and not revocations.denies(session_id="ses_2")
    clock.now = 10_959
    assert revocations.denies(session_id="ses_1")
    clock.now = 10_961
    assert not revocations.denies(session_id="ses_1")


async def test_the_verifier_check_looks_at_session_user_and_key() -> None:
    revocations = RevocationSet()
    until = time.time() + 900
    revocations.deny_session("ses_out", until)
    revocations.deny_user("user_gone", until)
    revocations.deny_api_key("key_revoked", until)
    assert await revocations.is_revoked(Principal("u1", None, session_id="ses_out"))
    assert await revocations.is_revoked(Principal("user_gone", None, session_id="ses_other"))
    assert await revocations.is_revoked(Principal("u1", None, api_key_id="key_revoked"))
    assert not await revocations.is_revoked(Principal("u1", "a@example.com", session_id="ses_live"))


def test_expired_denials_are_pruned() -> None:
    clock = Clock(0)
    revocations = RevocationSet(clock=clock, skew_s=0, prune_every_s=60)
    for i in range(100):
        revocations.deny_session(f"ses_{i}", until=50)
    clock.now = 61
    revocations.deny_session("ses_new", until=1000)
    assert len(revocations) == 1


# ---- auth's events and the catch-up -----------------------------------------------------------------------

class RefusingVerifier:
    """The token verifier: these tests never verify a token."""

    async def verify(self, token: str) -> Principal:
        raise Unauthorized("not in these tests")


@dataclass
class Replica:
    """The deps the handlers get, and the originals behind them that the tests look into."""

    revocations: RevocationSet
    api_keys: ApiKeyCache
    live: LiveHub
    deps: Deps


def _replica(auth: FakeAuth | None = None) -> Replica:
    auth = auth or FakeAuth()
    revocations, api_keys, live = RevocationSet(), ApiKeyCache(auth.exchange_api_key), LiveHub()
    deps = Deps(verifier=RefusingVerifier(), api_keys=api_keys, revocations=revocations, auth=auth, live=live,
                access_token_ttl_s=900)
    return Replica(revocations, api_keys, live, deps)


def test_the_handlers_cover_exactly_the_events_the_replica_queue_subscribes_to() -> None:
    assert sorted(route.model.TYPE for route in ROUTES) == sorted(GATEWAY_AUTH_EVENTS)


async def test_apikey_revoked_denies_the_key_and_evicts_its_tokens() -> None:
    replica = _replica()
    await replica.api_keys.access_token(KEY_A)
    await dispatcher(ROUTES, replica.deps)(new_event(ApiKeyRevoked(key_id="key_a", user_id="user_1")))
    assert len(replica.api_keys) == 0
    assert await replica.revocations.is_revoked(Principal("user_1", None, api_key_id="key_a"))


async def test_session_revoked_and_user_deleted_deny_until_the_events_until() -> None:
    replica = _replica()
    await replica.api_keys.access_token(KEY_C)
    until = int(time.time()) + 900
    handle = dispatcher(ROUTES, replica.deps)
    await handle(new_event(SessionRevoked(session_id="ses_1", user_id="user_1", until=until)))
    await handle(new_event(UserDeleted(user_id="user_2", until=until)))
    assert replica.revocations.denies(session_id="ses_1")
    assert replica.revocations.denies(user_id="user_2") and len(replica.api_keys) == 0


async def test_each_revocation_ends_the_open_streams_it_authenticated_and_no_other() -> None:
    replica = _replica()
    hub, handle = replica.live, dispatcher(ROUTES, replica.deps)
    signed_out = hub.open("user_1", Credential(session_id="ses_1"))
    other_session = hub.open("user_1", Credential(session_id="ses_2"))
    revoked_key = hub.open("user_1", Credential(api_key_id="key_a"))
    other_key = hub.open("user_1", Credential(api_key_id="key_b"))
    deleted = [hub.open("user_2", Credential(session_id="ses_3")), hub.open("user_2", Credential(api_key_id="key_c"))]
    until = int(time.time()) + 900

    await handle(new_event(SessionRevoked(session_id="ses_1", user_id="user_1", until=until)))
    await handle(new_event(ApiKeyRevoked(key_id="key_a", user_id="user_1")))
    await handle(new_event(UserDeleted(user_id="user_2", until=until)))

    for ended in (signed_out, revoked_key, *deleted):
        assert ended.get_nowait() is None  # the end marker: the stream returns
    assert other_session.empty() and other_key.empty()
    assert hub.connected("user_1") == 2 and hub.connected("user_2") == 0


async def test_an_event_whose_payload_does_not_parse_is_invalid_and_changes_nothing() -> None:
    replica = _replica()
    missing_fields = Envelope(type=SESSION_REVOKED, data={"user_id": "user_1"})
    with pytest.raises(InvalidPayload) as invalid:
        await dispatcher(ROUTES, replica.deps)(missing_fields)
    assert invalid.value.event_type == SESSION_REVOKED and "session_id" in invalid.value.errors
    assert len(replica.revocations) == 0


async def test_catch_up_waits_for_auth_then_denies_recently_revoked_sessions() -> None:
    auth = FakeAuth()
    auth.revocation_failures = 2
    auth.revoked = [RevokedSession("ses_old", "user_1")]
    replica = _replica(auth)
    assert await catch_up(replica.deps, give_up_s=5, first_delay_s=0.01) == 1
    assert replica.revocations.denies(session_id="ses_old")


async def test_catch_up_gives_up_with_a_warning_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    auth = FakeAuth()
    auth.revocation_failures = 1_000
    assert await catch_up(_replica(auth).deps, give_up_s=0.05, first_delay_s=0.01) is None
    assert "could not catch up" in caplog.text


# ---- routing and queue names ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/internal/revocations", "/internal", "/auth/../internal/revocations",
                                  "/v1/files/../../internal/api-keys/exchange", "/auth/./me"])
def test_internal_and_dot_segment_paths_have_no_upstream(path: str) -> None:
    assert routing.upstream_for(path) is None


def test_api_keys_stand_in_for_tokens_on_v1_and_api_only() -> None:
    assert routing.accepts_api_keys("/v1/files") and routing.accepts_api_keys("/api/catalog")
    assert not routing.accepts_api_keys("/auth/api-keys") and not routing.accepts_api_keys("/v1beta")


def test_replica_queue_names_fit_sqs_and_differ_per_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "a-very-long.host.name_of.some-kubernetes-pod-" + "x" * 80)
    names = {replica_queue_name(GATEWAY_REPLICA_QUEUE_PREFIX) for _ in range(50)}
    assert len(names) == 50
    assert all(len(n) <= MAX_QUEUE_NAME and n.startswith(GATEWAY_REPLICA_QUEUE_PREFIX) for n in names)
    assert all(c.isalnum() or c in "-_" for n in names for c in n)
    assert len(replica_id(20)) <= 20
    with pytest.raises(ValueError):
        replica_queue_name("p" * 75)
