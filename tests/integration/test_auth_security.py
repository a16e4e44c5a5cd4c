"""auth's defences against the embedded AWS over HTTP: failed sign-ins counted before the check and held back
per (account, address) with growing delays, the public address from BASE_URL only, refresh and logout that
need the token's secret, passwords over bcrypt's 72 bytes, the bounded refresh history, password changes."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from services.auth.app import build_app
from services.auth.login_throttle import LoginThrottle, backoff_s
from services.auth.sessions import KEPT_HASHES, RefreshReuse, Session, SessionInvalid, SessionsStore, make_refresh_token
from services.auth.settings import Settings
from shared.aws import AwsClients
from shared.contracts import resources
from shared.ratelimit import RateLimited
from shared.settings import ServiceSettings
from tests.support.aws import free_port
from tests.support.servers import serve

PASSWORD = "a long enough password"
TOO_LONG = "é" * 40  # 80 bytes in UTF-8: over bcrypt's 72


def _email() -> str:
    return f"sec-{uuid.uuid4().hex[:10]}@example.com"


def _address() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250 + 1}"


@pytest.fixture(scope="module")
def guarded(provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An auth whose held-back addresses stay held back for the test's length (the first delay is 10 minutes)."""
    port = free_port()
    settings = Settings(bcrypt_rounds=4, jwt_key_file=tmp_path_factory.mktemp("sec") / "key.pem",
                        base_url=f"http://127.0.0.1:{port}",
                        register_limit_per_ip=(100_000, 600), login_limit_per_ip=(100_000, 300),
                        refresh_limit_per_ip=(100_000, 60), refresh_limit_per_session=(3, 600),
                        login_free_failures=5, login_backoff_first_s=600)
    with serve(build_app(settings), port) as url:
        yield url


def _sign_up(base: str, email: str, address: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60, headers={"x-forwarded-for": address})
    response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return client


def _login(base: str, email: str, password: str, address: str) -> httpx.Response:
    return httpx.post(f"{base}/auth/login", json={"email": email, "password": password},
                      headers={"x-forwarded-for": address}, timeout=60)


# ---- failed sign-ins ----------------------------------------------------------------------------------------

def test_forty_parallel_wrong_guesses_get_only_the_free_checks(guarded: str) -> None:
    email, guesser = _email(), _address()
    _sign_up(guarded, email, _address()).close()
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda i: _login(guarded, email, f"wrong guess {i}", guesser), range(40)))
    assert Counter(a.status_code for a in answers) == {401: 5, 429: 35}
    held = next(a for a in answers if a.status_code == 429)
    assert held.json()["error"]["type"] == "rate_limit_error"
    assert held.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < int(held.headers["retry-after"]) <= 600
    # The guesser's address is held back even with the right password; the owner elsewhere is not.
    assert _login(guarded, email, PASSWORD, guesser).status_code == 429
    assert _login(guarded, email, PASSWORD, _address()).status_code == 200


def test_an_unknown_email_is_held_back_alike_and_its_state_expires(guarded: str) -> None:
    import boto3

    nobody, address = _email(), _address()
    answers = [_login(guarded, nobody, "wrong guess!", address) for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    items = boto3.client("dynamodb").scan(
        TableName=resources.RATE_LIMITS_TABLE, FilterExpression="begins_with(#b, :k)",
        ExpressionAttributeNames={"#b": "bucket"},
        ExpressionAttributeValues={":k": {"S": f"login:{nobody}|"}})["Items"]
    assert len(items) == 1 and "expires_at" in items[0]  # one item for the pair, removed by TTL


def test_a_success_starts_the_address_afresh(guarded: str) -> None:
    email, address = _email(), _address()
    _sign_up(guarded, email, address).close()
    for _ in range(3):
        assert [_login(guarded, email, "wrong guess!", address).status_code for _ in range(4)] == [401] * 4
        assert _login(guarded, email, PASSWORD, address).status_code == 200


@pytest.fixture
async def db(provisioned: dict[str, Any]) -> AsyncIterator[Any]:
    clients = AwsClients(ServiceSettings())
    try:
        yield await clients.get("dynamodb")
    finally:
        await clients.close()


def test_delays_double_from_the_first_up_to_the_cap() -> None:
    assert [backoff_s(n, 5, 2, 900) for n in range(4, 17)] == [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900]


@pytest.mark.asyncio(loop_scope="function")
async def test_each_check_past_the_free_ones_waits_twice_as_long(db: Any) -> None:
    clock = [1_000_000.0]
    throttle = LoginThrottle(db, resources.RATE_LIMITS_TABLE, free=2, first_s=2, cap_s=8, memory_s=86_400,
                             clock=lambda: clock[0])
    email, address = _email(), _address()
    await throttle.admit(email, address)
    await throttle.admit(email, address)
    for wait in (2, 4, 8, 8):  # doubling, then capped
        with pytest.raises(RateLimited) as held:
            await throttle.admit(email, address)
        assert held.value.retry_after_s == wait
        clock[0] += wait - 1
        with pytest.raises(RateLimited):
            await throttle.admit(email, address)
        clock[0] += 1
        await throttle.admit(email, address)
    await throttle.succeeded(email, address)
    await throttle.admit(email, address)
    await throttle.admit(email, address)  # free again


# ---- the public address -------------------------------------------------------------------------------------

def test_a_forged_forwarded_host_does_not_become_the_origin_state_changes_must_come_from(guarded: str) -> None:
    with closing(_sign_up(guarded, _email(), _address())) as browser:
        csrf = browser.cookies["llmt_csrf"]
        forged = browser.post("/auth/refresh", headers={"x-csrf-token": csrf, "origin": "https://evil.example",
                                                        "x-forwarded-host": "evil.example",
                                                        "x-forwarded-proto": "https"})
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_origin_mismatch"
        assert browser.post("/auth/refresh", headers={"x-csrf-token": csrf, "origin": guarded}).status_code == 200


# ---- refresh and logout need the secret ---------------------------------------------------------------------

def _forged(browser: httpx.Client) -> httpx.Client:
    """Another client holding the session's id (it is in every access token) with a secret of its own."""
    session_id = browser.cookies["llmt_refresh"].removeprefix("rt_").partition(".")[0]
    thief = httpx.Client(base_url=str(browser.base_url), timeout=60)
    thief.cookies.set("llmt_refresh", f"rt_{session_id}.{'x' * 43}", path="/auth")
    thief.cookies.set("llmt_csrf", "t")
    return thief


def test_a_wrong_secret_neither_refreshes_nor_signs_out_nor_uses_up_the_limit(guarded: str) -> None:
    with closing(_sign_up(guarded, _email(), _address())) as browser, _forged(browser) as thief:
        access = browser.post("/auth/refresh", headers={"x-csrf-token": browser.cookies["llmt_csrf"]})
        assert access.status_code == 200
        for _ in range(5):  # more than the session's limit of 3 a window
            refused = thief.post("/auth/refresh", headers={"x-csrf-token": "t"})
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "session_invalid"
        logout = thief.post("/auth/logout", headers={"x-csrf-token": "t"})
        assert logout.status_code == 401 and set(logout.json()["error"]) == {"message", "type", "param", "code"}
        token = {"Authorization": f"Bearer {access.json()['access_token']}"}
        assert httpx.get(f"{guarded}/auth/me", headers=token).status_code == 200
        again = browser.post("/auth/refresh", headers={"x-csrf-token": browser.cookies["llmt_csrf"]})
        assert again.status_code == 200, again.text
        assert browser.post("/auth/logout", headers={"x-csrf-token": browser.cookies["llmt_csrf"]}).status_code == 204
        assert httpx.get(f"{guarded}/auth/me", headers=token).status_code == 401


# ---- passwords over 72 bytes --------------------------------------------------------------------------------

def test_passwords_over_72_bytes_are_wrong_credentials_or_refused_never_a_500(guarded: str) -> None:
    email, address = _email(), _address()
    with closing(_sign_up(guarded, email, address)) as browser:
        for who in (email, _email()):
            login = _login(guarded, who, TOO_LONG, _address())
            assert login.status_code == 401 and login.json()["error"]["code"] == "invalid_credentials"
        signed_in = browser.post("/auth/login", json={"email": email, "password": PASSWORD})
        token = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        delete = httpx.request("DELETE", f"{guarded}/auth/me", headers=token, json={"password": TOO_LONG})
        assert delete.status_code == 401 and delete.json()["error"]["code"] == "invalid_credentials"
        change = httpx.post(f"{guarded}/auth/password", headers=token,
                            json={"current_password": PASSWORD, "new_password": TOO_LONG})
        assert change.status_code == 400 and change.json()["error"]["param"] == "new_password"
        assert change.json()["error"]["code"] == "password_too_long"
        assert httpx.get(f"{guarded}/auth/me", headers=token).status_code == 200
    register = httpx.post(f"{guarded}/auth/register", json={"email": _email(), "password": TOO_LONG})
    assert register.status_code == 400 and register.json()["error"]["code"] == "password_too_long"


# ---- password changes ---------------------------------------------------------------------------------------

def test_a_password_change_needs_the_current_one_and_ends_the_other_sessions(guarded: str) -> None:
    email, address = _email(), _address()
    with closing(_sign_up(guarded, email, address)) as first:
        other = _login(guarded, email, PASSWORD, address).json()
        renewed = first.post("/auth/refresh", headers={"x-csrf-token": first.cookies["llmt_csrf"]})
        token = {"Authorization": f"Bearer {renewed.json()['access_token']}"}
        wrong = httpx.post(f"{guarded}/auth/password", headers=token,
                           json={"current_password": "not the password", "new_password": "a new long password"})
        assert wrong.status_code == 401 and wrong.json()["error"]["param"] == "current_password"
        ok = httpx.post(f"{guarded}/auth/password", headers=token,
                        json={"current_password": PASSWORD, "new_password": "a new long password"})
        assert ok.status_code == 204, ok.text
        assert httpx.get(f"{guarded}/auth/me", headers=token).status_code == 200  # this session goes on
        assert httpx.get(f"{guarded}/auth/me",
                         headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 401
    assert _login(guarded, email, PASSWORD, _address()).status_code == 401
    assert _login(guarded, email, "a new long password", _address()).status_code == 200


# ---- the refresh history ------------------------------------------------------------------------------------

@pytest.mark.asyncio(loop_scope="function")
async def test_the_refresh_history_keeps_the_last_secrets_only(db: Any) -> None:
    store = SessionsStore(db, resources.SESSIONS_TABLE)
    session_id = f"ses_{uuid.uuid4().hex[:24]}"
    _, current = make_refresh_token(session_id)
    await store.create(Session(session_id=session_id, user_id="user-history", provider="password",
                               created_at=1, last_used_at=1, absolute_expires_at=10**10), current, ttl_s=60)
    hashes = [current]
    for step in range(KEPT_HASHES + 30):
        _, new = make_refresh_token(session_id)
        await store.rotate(session_id, hashes[-1], new, now=2 + step, idle_s=10**9)
        hashes.append(new)
    found = await store.get(session_id)
    assert found is not None
    assert len(found[1]["previous_hashes"]["L"]) == KEPT_HASHES  # bounded: the item stays small
    with pytest.raises(RefreshReuse):
        await store.verify(session_id, hashes[-2])  # a recent secret again: a replay
    with pytest.raises(SessionInvalid):
        await store.verify(session_id, hashes[0])  # one long gone is simply invalid
    assert (await store.verify(session_id, hashes[-1])).session_id == session_id
