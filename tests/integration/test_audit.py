"""The audit log against the embedded AWS over HTTP: each user's security events with time, address and
browser at GET /api/audit (newest first, paged), the alert on the security topic, and deletion with the account."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from services.auth.app import build_app
from services.auth.settings import Settings
from services.gateway.routing import upstream_for
from shared.contracts import resources
from shared.contracts.auth_events import SECURITY_ALERT, SecurityAlert
from tests.support.aws import free_port
from tests.support.events_tap import Tap
from tests.support.servers import serve

PASSWORD = "a long enough password"
BROWSER = "Mozilla/5.0 (audit test)"


@pytest.fixture(scope="module")
def audited(provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    settings = Settings(bcrypt_rounds=4, jwt_key_file=tmp_path_factory.mktemp("audit") / "key.pem",
                        base_url=f"http://127.0.0.1:{port}", register_limit_per_ip=(100_000, 600),
                        login_limit_per_ip=(100_000, 300), login_free_failures=100,
                        security_alert_failures=(3, 3600))
    with serve(build_app(settings), port) as url:
        yield url


def _address() -> str:
    return f"203.0.113.{uuid.uuid4().int % 250 + 1}"


def _as(address: str) -> dict[str, str]:
    return {"x-forwarded-for": address, "user-agent": BROWSER}


def _register(base: str, address: str) -> tuple[str, dict[str, str]]:
    email = f"audit-{uuid.uuid4().hex[:10]}@example.com"
    response = httpx.post(f"{base}/auth/register", json={"email": email, "password": PASSWORD}, headers=_as(address))
    assert response.status_code == 201, response.text
    return email, {"Authorization": f"Bearer {response.json()['access_token']}", **_as(address)}


def _login(base: str, email: str, password: str, address: str) -> httpx.Response:
    return httpx.post(f"{base}/auth/login", json={"email": email, "password": password}, headers=_as(address))


def _events(base: str, token: dict[str, str], **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{base}/api/audit", headers=token, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_gateway_routes_the_audit_log_to_auth() -> None:
    assert upstream_for("/api/audit") == "auth"


def test_security_events_are_listed_newest_first_with_address_and_browser(audited: str) -> None:
    home, elsewhere = _address(), _address()
    started = int(time.time())
    email, token = _register(audited, home)
    assert _login(audited, email, "not the password", elsewhere).status_code == 401
    assert _login(audited, email, PASSWORD, home).status_code == 200  # a known address: no news
    assert _login(audited, email, PASSWORD, elsewhere).status_code == 200  # a new one
    key = httpx.post(f"{audited}/auth/api-keys", headers=token, json={"name": "laptop"}).json()
    assert httpx.delete(f"{audited}/auth/api-keys/{key['id']}", headers=token).status_code == 200
    assert httpx.post(f"{audited}/auth/password", headers=token,
                      json={"current_password": PASSWORD, "new_password": "another long password"}).status_code == 204
    page = _events(audited, token)
    assert page["object"] == "list" and page["has_more"] is False
    assert [e["type"] for e in page["data"]] == [
        "password.changed", "api_key.revoked", "api_key.created", "sign_in.new_address", "sign_in.succeeded",
        "sign_in.succeeded", "sign_in.failed", "account.created"]
    for event in page["data"]:
        assert event["object"] == "audit_event" and event["user_agent"] == BROWSER
        assert started <= event["created_at"] <= int(time.time()) + 1
    assert [e["ip_address"] for e in page["data"][3:]] == [elsewhere, elsewhere, home, elsewhere, home]
    assert page["data"][2]["details"] == {"key_id": key["id"], "name": "laptop", "prefix": key["prefix"]}
    assert (page["first_id"], page["last_id"]) == (page["data"][0]["id"], page["data"][-1]["id"])


def test_pages_follow_the_after_cursor_and_bad_inputs_get_the_envelope(audited: str) -> None:
    address = _address()
    email, token = _register(audited, address)
    for _ in range(4):
        assert _login(audited, email, "not the password", address).status_code == 401
    everything = _events(audited, token, limit=100)["data"]
    assert len(everything) == 5
    seen: list[str] = []
    after: str | None = None
    while True:
        page = _events(audited, token, limit=2, **({"after": after} if after else {}))
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == [e["id"] for e in everything]
    for params, param in (({"after": "nope"}, "after"), ({"limit": 0}, "limit"), ({"limit": 101}, "limit")):
        bad = httpx.get(f"{audited}/api/audit", headers=token, params=params)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param
        assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{audited}/api/audit").status_code == 401


def test_each_user_sees_only_their_own_events(audited: str) -> None:
    _, mine = _register(audited, _address())
    other_email, theirs = _register(audited, _address())
    assert _login(audited, other_email, "not the password", _address()).status_code == 401
    my_events = _events(audited, mine)["data"]
    assert [e["type"] for e in my_events] == ["account.created"]
    their_ids = {e["id"] for e in _events(audited, theirs)["data"]}
    assert len(their_ids) == 2
    # Another user's cursor is only a position in the caller's own log: it shows nothing of theirs.
    for cursor in their_ids:
        assert {e["id"] for e in _events(audited, mine, after=cursor)["data"]} <= {my_events[0]["id"]}


def test_repeated_failures_publish_one_alert_per_window(audited: str) -> None:
    topic = boto3.client("sns").create_topic(Name=resources.SECURITY_TOPIC)["TopicArn"]
    tap = Tap(topic)
    email, token = _register(audited, _address())
    user_id = httpx.get(f"{audited}/auth/me", headers=token).json()["id"]
    for _ in range(4):  # the threshold is 3, from any addresses
        assert _login(audited, email, "not the password", _address()).status_code == 401
    event = tap.wait_for(lambda e: e.get("type") == SECURITY_ALERT and e["data"]["user_id"] == user_id)
    alert = SecurityAlert.model_validate(event["data"])
    assert (alert.kind, alert.email, alert.count, alert.window_s) == ("repeated_sign_in_failures", email, 3, 3600)
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    for _ in range(4):  # an unknown email: nobody to alert, no audit partition
        assert _login(audited, unknown, "not the password", _address()).status_code == 401
    with pytest.raises(TimeoutError):  # no second alert for this user within the window
        tap.wait_for(lambda e: e is not event and e.get("type") == SECURITY_ALERT
                     and e["data"]["user_id"] == user_id, deadline_s=3)
    assert sum(e.get("type") == SECURITY_ALERT and e["data"]["user_id"] == user_id for e in tap.seen) == 1


def test_deleting_the_account_deletes_its_audit_log(audited: str) -> None:
    address = _address()
    email, token = _register(audited, address)
    user_id = httpx.get(f"{audited}/auth/me", headers=token).json()["id"]
    assert _login(audited, email, PASSWORD, _address()).status_code == 200
    db = boto3.client("dynamodb")

    def stored() -> int:
        return int(db.query(TableName=resources.AUDIT_TABLE, KeyConditionExpression="user_id = :u",
                            ExpressionAttributeValues={":u": {"S": user_id}}, Select="COUNT")["Count"])

    assert stored() >= 4  # events and the addresses signed in from
    gone = httpx.request("DELETE", f"{audited}/auth/me", headers=token, json={"password": PASSWORD})
    assert gone.status_code == 204
    assert stored() == 0
