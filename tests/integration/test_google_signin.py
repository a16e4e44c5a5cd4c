"""Sign in with Google, the whole flow for real: auth (served over HTTP, on the embedded AWS) against a
local OpenID provider (oidc-provider-mock in a thread, on a free port) standing in for Google. A scripted
browser with its own cookie jar follows each redirect by hand, so any hop can be checked or tampered with,
and submits the provider's consent form as a chosen person."""

from __future__ import annotations

import io
import json
import os
import re
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import boto3
import httpx
import pytest
import werkzeug.serving
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from services.auth.app import build_app
from services.auth.google_routes import POPUP_CSP, state_key
from services.auth.settings import Settings
from shared.contracts import resources
from tests.support.accounts import bearer, register
from tests.support.aws import free_port
from tests.support.servers import serve

# The mock provider runs on authlib's legacy OpenID API.
pytestmark = pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning")

CLIENT_ID = "llm-tuner-test"
CLIENT_SECRET = "a-client-secret-for-tests"


# ---- the provider -----------------------------------------------------------------------------------------

def _with_client_id(query: str, client_id: str) -> str:
    return urlencode([(k, client_id if k == "client_id" else v) for k, v in parse_qsl(query, keep_blank_values=True)])


class ProviderTap:
    """WSGI middleware in front of the mock provider. It records each token request, and under
    `/as/<client id>/` it is a provider that takes every request for one from that other client (the
    `client_id` is rewritten), so the ID tokens it mints there are addressed to someone else."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.token_requests: list[dict[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        client_id = None
        if environ["PATH_INFO"].startswith("/as/"):
            client_id, _, rest = environ["PATH_INFO"][len("/as/"):].partition("/")
            environ["SCRIPT_NAME"], environ["PATH_INFO"] = f"/as/{client_id}", f"/{rest}"
            environ["QUERY_STRING"] = _with_client_id(environ.get("QUERY_STRING", ""), client_id)
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
            if environ["PATH_INFO"] == "/oauth2/token":
                self.token_requests.append(dict(parse_qsl(body)))
            if client_id:
                body = _with_client_id(body, client_id)
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body.encode()), str(len(body.encode()))
        return self.app(environ, start_response)  # type: ignore[no-any-return]


@dataclass
class Provider:
    url: str
    tap: ProviderTap

    def discovery_url(self, as_client: str | None = None) -> str:
        prefix = f"/as/{as_client}" if as_client else ""
        return f"{self.url}{prefix}/.well-known/openid-configuration"

    def person(self, email: str, *, verified: bool = True, name: str = "Pat Example") -> str:
        """A Google account: its subject, with the claims the provider will put in its ID tokens."""
        sub = f"g-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.url}/users/{sub}", json={"email": email, "email_verified": verified,
                                                               "name": name})
        assert response.status_code == 204, response.text
        return sub


@pytest.fixture(scope="module")
def idp() -> Iterator[Provider]:
    saved = os.environ.get("AUTHLIB_INSECURE_TRANSPORT")
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on 127.0.0.1
    import authlib.deprecate  # its import turns its own warnings on: ours must come after

    with warnings.catch_warnings():  # the mock imports authlib.jose, deprecated in favour of joserfc
        warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
        import oidc_provider_mock
    tap = ProviderTap(oidc_provider_mock.app(require_nonce=True))
    server = werkzeug.serving.make_server("127.0.0.1", 0, tap, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield Provider(f"http://127.0.0.1:{server.server_port}", tap)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        if saved is None:
            os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None)
        else:
            os.environ["AUTHLIB_INSECURE_TRANSPORT"] = saved


# ---- auth ---------------------------------------------------------------------------------------------------

@contextmanager
def auth_app(tmp: Path, **overrides: Any) -> Iterator[str]:
    """An auth service of its own, at the base URL it believes it has."""
    port = free_port()
    defaults: dict[str, Any] = {
        "bcrypt_rounds": 4, "jwt_key_file": tmp / "key.pem", "base_url": f"http://127.0.0.1:{port}",
        "register_limit_per_ip": (100_000, 600), "login_limit_per_ip": (100_000, 300),
        "refresh_limit_per_ip": (100_000, 60), "google_limit_per_ip": (100_000, 60)}
    settings = Settings(**(defaults | overrides))
    with serve(build_app(settings), port) as url:
        yield url


def google_settings(idp: Provider, as_client: str | None = None) -> dict[str, Any]:
    return {"google_client_id": CLIENT_ID, "google_client_secret": CLIENT_SECRET,
            "google_discovery_url": idp.discovery_url(as_client)}


@pytest.fixture(scope="module")
def app(provisioned: dict[str, Any], idp: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with auth_app(tmp_path_factory.mktemp("auth-google"), **google_settings(idp)) as url:
        yield url


# ---- the browser ------------------------------------------------------------------------------------------

@dataclass
class Browser:
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def start(self, app: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> str:
        """Click "Sign in with Google": the provider's authorization URL we are sent to."""
        response = self.http.get(f"{app}/auth/google/login", params=params, headers=headers)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def consent(self, authorization_url: str, sub: str) -> str:
        """Sign in at the provider as `sub`: the callback URL it sends us back to."""
        response = self.http.post(authorization_url, data={"sub": sub})
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def deny(self, authorization_url: str) -> str:
        response = self.http.post(authorization_url, data={"action": "deny"})
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def open(self, url: str) -> httpx.Response:
        return self.http.get(url)

    def sign_in(self, app: str, sub: str, params: dict[str, str] | None = None) -> httpx.Response:
        return self.open(self.consent(self.start(app, params), sub))

    def session(self, app: str) -> dict[str, Any]:
        """What the dashboard does on load: trade the refresh cookie for an access token."""
        response = self.http.post(f"{app}/auth/refresh", headers={"X-CSRF-Token": self.http.cookies["llmt_csrf"]})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    return parts._replace(query=urlencode({**query(url), **changes})).geturl()


def landed_on_error(response: httpx.Response, code: str) -> None:
    assert response.status_code == 302, response.text
    assert response.headers["location"] == f"/login?error={code}"
    assert "llmt_refresh" not in response.headers.get("set-cookie", "")


def popup_result(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == POPUP_CSP
    found = re.search(r'<script type="application/json" id="llmt-result">(.*?)</script>', response.text, re.S)
    assert found, response.text
    result: dict[str, Any] = json.loads(found.group(1))
    return result


def email() -> str:
    return f"pat-{uuid.uuid4().hex[:10]}@example.com"


# ---- signing in -------------------------------------------------------------------------------------------

def test_a_new_person_signs_in_by_redirect_and_lands_where_they_were_going(app: str, idp: Provider) -> None:
    browser, address = Browser(), email()
    sub = idp.person(address.upper(), name="Pat New")

    authorization_url = browser.start(app, {"next": "/jobs?tab=events"})
    asked = query(authorization_url)
    assert authorization_url.startswith(f"{idp.url}/oauth2/authorize?")
    assert asked["redirect_uri"] == f"{app}/auth/google/callback"
    assert (asked["response_type"], asked["client_id"], asked["scope"], asked["code_challenge_method"]) == \
        ("code", CLIENT_ID, "openid email profile", "S256")
    assert len(asked["state"]) >= 43 and len(asked["nonce"]) >= 43

    callback_url = browser.consent(authorization_url, sub)
    assert callback_url.startswith(f"{app}/auth/google/callback?")
    landed = browser.open(callback_url)

    assert landed.status_code == 302, landed.text
    assert landed.headers["location"] == "/jobs?tab=events"
    assert "llmt_google_state" not in browser.http.cookies  # the binding cookie is spent
    user = browser.session(app)["user"]
    assert (user["email"], user["name"], user["providers"]) == (address, "Pat New", ["google"])
    # PKCE: the code went back with the verifier whose S256 challenge the authorization request carried.
    exchange = next(r for r in idp.tap.token_requests if r.get("code") == query(callback_url)["code"])
    assert create_s256_code_challenge(exchange["code_verifier"]) == asked["code_challenge"]
    assert (exchange["client_id"], exchange["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)


def test_popup_mode_hands_the_session_to_the_opener_on_our_origin_only(app: str, idp: Provider) -> None:
    browser, address = Browser(), email()
    sub = idp.person(address)

    result = popup_result(browser.sign_in(app, sub, {"mode": "popup"}))

    assert result["targetOrigin"] == app
    message = result["message"]
    assert set(message) == {"type", "access_token", "expires_in", "user"}
    assert (message["type"], message["expires_in"], message["user"]["email"]) == \
        ("llm-tuner:session", 900, address)
    me = httpx.get(f"{app}/auth/me", headers=bearer(message))
    assert me.status_code == 200 and me.json()["id"] == message["user"]["id"]
    assert browser.session(app)["user"]["id"] == message["user"]["id"]  # the refresh cookie came too


def test_a_verified_google_email_links_the_existing_password_account(app: str, idp: Provider) -> None:
    address = email()
    # GIVEN someone registered this address with a password (we never verified they own it)
    squatter = register(app, email=address, password="correct horse battery")
    registered = squatter["user"]
    sub = idp.person(address.title())

    browser = Browser()
    landed = browser.sign_in(app, sub)

    assert landed.headers["location"] == "/dashboard"
    user = browser.session(app)["user"]
    # THEN the account is linked to the owner Google vouches for, and what the registrant held ends:
    # the password, its sessions (pre-account hijacking is closed)
    assert (user["id"], user["providers"]) == (registered["id"], ["google"])
    password = httpx.post(f"{app}/auth/login", json={"email": address, "password": "correct horse battery"})
    assert password.status_code == 401
    stale = httpx.get(f"{app}/auth/me", headers={"Authorization": f"Bearer {squatter['access_token']}"})
    assert stale.status_code == 401

    # GIVEN the link, WHEN the same Google identity comes back with another email and an off-site `next`
    httpx.put(f"{idp.url}/users/{sub}", json={"email": email(), "email_verified": True}).raise_for_status()
    again = Browser()
    landed = again.sign_in(app, sub, {"next": "//evil.example/steal"})
    # THEN it is the same account, and it lands on our dashboard
    assert landed.headers["location"] == "/dashboard"
    assert again.session(app)["user"]["id"] == registered["id"]
    # AND the account's audit log tells the story, newest first
    token = {"Authorization": f"Bearer {again.session(app)['access_token']}"}
    events = [e["type"] for e in httpx.get(f"{app}/api/audit", headers=token).json()["data"]]
    assert events == ["sign_in.succeeded", "sign_in.failed", "sign_in.succeeded", "google.linked",
                      "account.created"]


def test_an_unverified_google_email_is_not_linked(app: str, idp: Provider) -> None:
    address = email()
    registered = register(app, email=address)["user"]
    sub = idp.person(address, verified=False)

    landed_on_error(Browser().sign_in(app, sub), "google_email_unverified")

    login = httpx.post(f"{app}/auth/login", json={"email": address, "password": "correct horse battery"})
    user = login.json()["user"]
    assert (user["id"], user["providers"]) == (registered["id"], ["password"])


# ---- what is refused --------------------------------------------------------------------------------------

def test_a_callback_for_another_browsers_sign_in_is_refused(app: str, idp: Provider) -> None:
    victim, attacker = Browser(), Browser()
    victims_url = victim.start(app)
    attacker.start(app)  # the attacker has a sign-in of its own under way, and its cookie
    sub = idp.person(email())

    landed_on_error(attacker.open(attacker.consent(victims_url, sub)), "google_state_mismatch")
    landed_on_error(Browser().open(victim.consent(victims_url, sub)), "google_state_mismatch")  # no cookie at all

    # The victim's own sign-in is still pending and completes.
    assert victim.open(victim.consent(victims_url, sub)).headers["location"] == "/dashboard"


def test_a_tampered_state_is_refused(app: str, idp: Provider) -> None:
    browser = Browser()
    callback_url = browser.consent(browser.start(app), idp.person(email()))
    tampered = with_query(callback_url, state=query(callback_url)["state"] + "x")
    landed_on_error(browser.open(tampered), "google_state_mismatch")
    landed_on_error(browser.open(with_query(callback_url, state="")), "google_state_mismatch")


def test_an_id_token_with_another_nonce_is_refused(app: str, idp: Provider) -> None:
    browser = Browser()
    authorization_url = browser.start(app)
    # The pending sign-in now expects another nonce than the one the provider will put in the ID token.
    boto3.client("dynamodb").update_item(
        TableName=resources.OAUTH_STATES_TABLE, Key={"state": {"S": state_key(query(authorization_url)["state"])}},
        UpdateExpression="SET nonce = :n", ExpressionAttributeValues={":n": {"S": "another-nonce"}})

    landed_on_error(browser.open(browser.consent(authorization_url, idp.person(email()))), "google_token_invalid")


def test_consent_denied_lands_on_login_or_tells_the_opener(app: str, idp: Provider) -> None:
    browser = Browser()
    landed_on_error(browser.open(browser.deny(browser.start(app))), "google_denied")

    result = popup_result(browser.open(browser.deny(browser.start(app, {"mode": "popup"}))))
    assert result == {"message": {"type": "llm-tuner:error", "code": "google_denied"}, "targetOrigin": app}


def test_a_callback_played_twice_is_refused_and_so_is_a_spent_code(app: str, idp: Provider) -> None:
    browser, sub = Browser(), idp.person(email())
    callback_url = browser.consent(browser.start(app), sub)
    binding = browser.http.cookies["llmt_google_state"]
    assert browser.open(callback_url).headers["location"] == "/dashboard"

    # The same callback again, even with the binding cookie put back: the state was taken.
    browser.http.cookies.set("llmt_google_state", binding, domain="127.0.0.1", path="/auth/google/callback")
    landed_on_error(browser.open(callback_url), "google_state_expired")

    # A fresh sign-in's state with the spent code: the provider refuses the exchange.
    fresh_state = query(browser.start(app))["state"]
    landed_on_error(browser.open(with_query(callback_url, state=fresh_state)), "google_exchange_failed")


def test_an_id_token_minted_for_another_client_is_refused(provisioned: dict[str, Any], idp: Provider,
                                                         tmp_path: Path) -> None:
    # The provider takes our requests for another client's, so the ID token it signs is addressed to that one.
    with auth_app(tmp_path, **google_settings(idp, as_client="someone-else")) as confused:
        browser = Browser()
        landed_on_error(browser.sign_in(confused, idp.person(email())), "google_token_invalid")


def test_a_forged_forwarded_host_changes_neither_the_redirect_uri_nor_the_popup_origin(app: str) -> None:
    # The suite's requests come from 127.0.0.1, a trusted proxy: even its forwarded Host is not believed.
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", "Host": "evil.example"}
    authorization_url = Browser().start(app, headers=forged)
    assert query(authorization_url)["redirect_uri"] == f"{app}/auth/google/callback"
    popup = popup_result(httpx.get(f"{app}/auth/google/callback", params={"error": "access_denied"},
                                   cookies={"llmt_google_state": "popup.x"}, headers=forged))
    assert popup["targetOrigin"] == app


def test_both_routes_are_rate_limited_per_client_address(provisioned: dict[str, Any], idp: Provider,
                                                        tmp_path: Path) -> None:
    with auth_app(tmp_path, **google_settings(idp) | {"google_limit_per_ip": (2, 3600)}) as strict:
        client = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250 + 1}"}
        assert httpx.get(f"{strict}/auth/google/login", headers=client).status_code == 302
        assert httpx.get(f"{strict}/auth/google/callback", headers=client).status_code == 302
        limited = httpx.get(f"{strict}/auth/google/login", headers=client)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(limited.headers["retry-after"]) > 0


def test_without_a_client_id_google_sign_in_is_not_found_and_the_ui_is_told(
        provisioned: dict[str, Any], app: str, tmp_path: Path) -> None:
    assert httpx.get(f"{app}/auth/providers").json() == {"password": True, "google": True}
    with auth_app(tmp_path, google_client_id=None) as plain:
        for path in ("/auth/google/login", "/auth/google/callback?code=c&state=s"):
            response = httpx.get(f"{plain}{path}")
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "google_not_configured"
        assert httpx.get(f"{plain}/auth/providers").json() == {"password": True, "google": False}


def test_an_unknown_mode_is_a_bad_request(app: str) -> None:
    response = httpx.get(f"{app}/auth/google/login", params={"mode": "iframe"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "mode"


def test_an_unreachable_provider_is_a_reason_on_the_login_page_not_a_500(
        provisioned: dict[str, Any], tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration"
    with auth_app(tmp_path, google_client_id=CLIENT_ID, google_discovery_url=closed) as down:
        landed_on_error(httpx.get(f"{down}/auth/google/login"), "google_unavailable")
        popup = popup_result(httpx.get(f"{down}/auth/google/login", params={"mode": "popup"}))
        assert popup["message"] == {"type": "llm-tuner:error", "code": "google_unavailable"}
