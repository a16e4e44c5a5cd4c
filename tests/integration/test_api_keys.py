"""API keys and revocations through two gateway replicas in front of the real services: a key is shown
once and works with the official openai SDK; revoking it, signing out or deleting the account stops the
key and the tokens at every replica within seconds, and a replica started afterwards knows it too."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from services.gateway.app import build_app
from services.gateway.settings import Settings
from tests.support.accounts import bearer, register
from tests.support.servers import serve

PROPAGATION_S = 10.0


def _settings(auth_url: str, files_url: str, training_url: str) -> Settings:
    return Settings(auth_url=auth_url, files_url=files_url, training_url=training_url,
                    auth_jwks_url=f"{auth_url}/.well-known/jwks.json", replica_poll_s=1)


@pytest.fixture(scope="module")
def gateways(auth_url: str, files_url: str, training_url: str) -> Iterator[tuple[str, str]]:
    """Two replicas, each with its own queue on auth's events."""
    settings = _settings(auth_url, files_url, training_url)
    with serve(build_app(settings)) as first, serve(build_app(settings)) as second:
        yield first, second


def _key_header(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _files(gateway: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{gateway}/v1/files", headers=headers, timeout=10)


def _new_key(gateway: str, session: dict[str, Any], name: str = "ci") -> dict[str, Any]:
    response = httpx.post(f"{gateway}/auth/api-keys", json={"name": name}, headers=bearer(session))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _eventually(check: Callable[[], bool], what: str, within_s: float = PROPAGATION_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s}s: {what}")
        time.sleep(0.1)


def _refused(gateway: str, headers: dict[str, str], code: str) -> Callable[[], bool]:
    def check() -> bool:
        response = _files(gateway, headers)
        return response.status_code == 401 and response.json()["error"]["code"] == code
    return check


def test_a_key_is_shown_once_listed_without_its_secret_and_marked_used(gateways: tuple[str, str]) -> None:
    gateway = gateways[0]
    session = register(gateway)
    created = _new_key(gateway, session, name="my laptop")
    key = created["key"]
    assert key.startswith("sk-") and created["prefix"] == key[:len(created["prefix"])]

    listed = httpx.get(f"{gateway}/auth/api-keys", headers=bearer(session))
    assert listed.status_code == 200 and key not in listed.text
    [item] = listed.json()["data"]
    assert {"name": item["name"], "prefix": item["prefix"], "last_used_at": item["last_used_at"]} == {
        "name": "my laptop", "prefix": created["prefix"], "last_used_at": None}
    assert item["created_at"] > 0 and "key" not in item

    assert _files(gateway, _key_header(key)).status_code == 200
    [used] = httpx.get(f"{gateway}/auth/api-keys", headers=bearer(session)).json()["data"]
    assert used["last_used_at"] is not None and used["last_used_at"] >= item["created_at"]


def test_the_openai_sdk_works_with_a_key_and_gets_an_authentication_error_for_a_bad_one(
        gateways: tuple[str, str]) -> None:
    gateway = gateways[0]
    key = _new_key(gateway, register(gateway))["key"]
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
    assert list(client.files.list()) == []
    for bad in (key[:-1] + ("x" if key[-1] != "x" else "y"), "sk-not-a-key"):
        with pytest.raises(openai.AuthenticationError) as refused:
            openai.OpenAI(base_url=f"{gateway}/v1", api_key=bad, max_retries=0).files.list()
        assert refused.value.code == "invalid_api_key"


def test_a_key_does_not_stand_in_for_a_person_on_auth_routes(gateways: tuple[str, str]) -> None:
    gateway = gateways[0]
    key = _new_key(gateway, register(gateway))["key"]
    for method, path in (("GET", "/auth/me"), ("POST", "/auth/api-keys")):
        response = httpx.request(method, f"{gateway}{path}", headers=_key_header(key), json={"name": "x"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_revoked_key_stops_working_at_every_replica(gateways: tuple[str, str]) -> None:
    session = register(gateways[0])
    created = _new_key(gateways[0], session)
    for gateway in gateways:  # each replica has exchanged and cached it
        assert _files(gateway, _key_header(created["key"])).status_code == 200
        assert _files(gateway, _key_header(created["key"])).status_code == 200

    deleted = httpx.delete(f"{gateways[1]}/auth/api-keys/{created['id']}", headers=bearer(session))
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True

    for gateway in gateways:
        _eventually(_refused(gateway, _key_header(created["key"]), "invalid_api_key"), f"key refused at {gateway}")
    assert httpx.get(f"{gateways[0]}/auth/api-keys", headers=bearer(session)).json()["data"] == []


def test_another_users_key_cannot_be_revoked(gateways: tuple[str, str]) -> None:
    owner, other = register(gateways[0]), register(gateways[0])
    created = _new_key(gateways[0], owner)
    response = httpx.delete(f"{gateways[0]}/auth/api-keys/{created['id']}", headers=bearer(other))
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert _files(gateways[0], _key_header(created["key"])).status_code == 200


def test_a_signed_out_token_is_refused_everywhere_and_by_a_replica_started_later(
        gateways: tuple[str, str], auth_url: str, files_url: str, training_url: str) -> None:
    session = register(gateways[0])
    for gateway in gateways:
        assert _files(gateway, bearer(session)).status_code == 200

    logout = httpx.post(f"{gateways[0]}/auth/logout", headers=bearer(session))
    assert logout.status_code == 204, logout.text

    for gateway in gateways:
        _eventually(_refused(gateway, bearer(session), "token_revoked"), f"token refused at {gateway}")
    with serve(build_app(_settings(auth_url, files_url, training_url))) as late:
        # Its queue did not exist at the logout: it knows from the catch-up, at once.
        assert _refused(late, bearer(session), "token_revoked")()
        assert _files(late, bearer(register(late))).status_code == 200


def test_a_deleted_accounts_tokens_and_keys_are_refused(gateways: tuple[str, str]) -> None:
    password = "correct horse battery"
    session = register(gateways[0], password=password)
    key = _new_key(gateways[0], session)["key"]
    for gateway in gateways:
        assert _files(gateway, bearer(session)).status_code == 200
        assert _files(gateway, _key_header(key)).status_code == 200

    deleted = httpx.request("DELETE", f"{gateways[0]}/auth/me", headers=bearer(session), json={"password": password})
    assert deleted.status_code == 204, deleted.text

    for gateway in gateways:
        _eventually(_refused(gateway, bearer(session), "token_revoked"), f"token refused at {gateway}")
        _eventually(_refused(gateway, _key_header(key), "invalid_api_key"), f"key refused at {gateway}")


def test_the_audit_log_is_reached_through_the_gateway_with_the_callers_browser(gateways: tuple[str, str],
                                                                               auth_url: str) -> None:
    gateway, _ = gateways
    session, other = register(auth_url), register(auth_url)
    browser = {**bearer(session), "User-Agent": "audit-through-the-gateway"}
    key = httpx.post(f"{gateway}/auth/api-keys", json={"name": "ci"}, headers=browser)
    assert key.status_code == 201, key.text
    page = httpx.get(f"{gateway}/api/audit", headers=browser, params={"limit": 1})
    assert page.status_code == 200, page.text
    [latest] = page.json()["data"]
    assert (latest["type"], latest["user_agent"]) == ("api_key.created", "audit-through-the-gateway")
    assert latest["details"]["key_id"] == key.json()["id"]
    theirs = httpx.get(f"{gateway}/api/audit", headers=bearer(other)).json()["data"]
    assert [e["type"] for e in theirs] == ["account.created"]
    assert httpx.get(f"{gateway}/api/audit").status_code == 401
