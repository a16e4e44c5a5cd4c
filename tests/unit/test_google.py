"""Google sign-in's pure parts (PKCE, the landing path, the authorization URL, the popup page), ID token
verification against keys served by an in-memory transport, and the account decision with fakes of auth's
ports (services/auth/deps.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.hazmat.primitives.asymmetric import rsa

from services.auth import google_routes, oidc_client
from services.auth.account_linking import account_for
from services.auth.api_key_store import ApiKey
from services.auth.deps import Deps
from services.auth.models import StoredUser
from services.auth.oauth_states import PendingSignIn
from services.auth.oidc_client import GoogleIdentity, GoogleProvider, GoogleSignInFailed, ProviderMetadata
from services.auth.sessions import Session, SessionInvalid
from services.auth.settings import Settings
from services.auth.user_store import IdentityTaken
from shared.contracts.auth_events import USER_CREATED, UserCreated
from shared.envelope import MemoryPublisher
from tests.support.auth_fakes import CLIENT, MemoryAudit, NoThrottle

ISSUER = "https://idp.test"
CLIENT_ID = "llm-tuner-web"


# ---- PKCE, next, the authorization URL ----------------------------------------------------------------

def test_code_challenge_matches_rfc_7636_appendix_b() -> None:
    assert create_s256_code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == \
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_code_verifiers_are_fresh_and_within_the_rfc_alphabet_and_length() -> None:
    verifiers = {oidc_client.new_code_verifier() for _ in range(20)}
    assert len(verifiers) == 20
    for verifier in verifiers:
        assert 43 <= len(verifier) <= 128
        assert re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)


@pytest.mark.parametrize("value", ["/dashboard", "/jobs/ftjob-1?tab=events#top", "/", "/a/b%2Fc"])
def test_next_keeps_paths_on_this_site(value: str) -> None:
    assert google_routes.safe_next(value) == value


@pytest.mark.parametrize("value", [
    None, "", "dashboard", "//evil.example/x", "/\\evil.example", "\\\\evil.example", "https://evil.example/",
    "javascript:alert(1)", "/\t/evil.example", "/ok\r\nSet-Cookie: x=1", "/has space", "/" + "a" * 2000,
    "http:/evil.example",
])
def test_next_falls_back_to_the_dashboard_for_anything_that_could_leave_the_site(value: str | None) -> None:
    assert google_routes.safe_next(value) == "/dashboard"


def _pending(**changes: Any) -> PendingSignIn:
    values: dict[str, Any] = {"nonce": "n-1", "code_verifier": "v" * 50, "mode": "redirect",
                              "next_path": "/dashboard", "redirect_uri": "https://tuner.example/auth/google/callback",
                              "created_at": 0}
    return PendingSignIn(**(values | changes))


def test_authorization_url_asks_for_a_code_with_state_nonce_and_s256_challenge() -> None:
    metadata = ProviderMetadata(ISSUER, f"{ISSUER}/authorize?hd=example.com", f"{ISSUER}/token", f"{ISSUER}/jwks")
    url = oidc_client.authorization_url(metadata, CLIENT_ID, "the-state", _pending())
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/authorize"
    assert params == {"hd": "example.com", "response_type": "code", "client_id": CLIENT_ID,
                      "redirect_uri": "https://tuner.example/auth/google/callback", "scope": "openid email profile",
                      "state": "the-state", "nonce": "n-1", "code_challenge": create_s256_code_challenge("v" * 50),
                      "code_challenge_method": "S256"}


# ---- the popup page ---------------------------------------------------------------------------------------

def _page_parts(html: str) -> tuple[dict[str, Any], str]:
    data = re.search(r'<script type="application/json" id="llmt-result">(.*?)</script>', html, re.S)
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    assert data and script
    return json.loads(data.group(1)), script.group(1)


def test_popup_page_carries_data_that_cannot_end_its_script_element() -> None:
    hostile = {"type": "llm-tuner:session", "user": {"name": "</script><script>alert(1)</script>&<!--"}}
    response = google_routes.popup_page(hostile, "https://tuner.example")
    html = bytes(response.body).decode()
    assert html.count("</script>") == 2  # the data block's and the script's own, nothing injected
    data, _ = _page_parts(html)
    assert data == {"message": hostile, "targetOrigin": "https://tuner.example"}


def test_popup_page_csp_allows_exactly_its_own_script() -> None:
    response = google_routes.popup_page({"type": "llm-tuner:error", "code": "google_denied"},
                                        "https://tuner.example")
    _, script = _page_parts(bytes(response.body).decode())
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = response.headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["cache-control"] == "no-store"


# ---- ID token verification --------------------------------------------------------------------------------

class FakeIdp:
    """Discovery and JWKS over an in-memory transport; signs ID tokens with the key it publishes."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "key-1"
        self.jwks_fetches = 0

    def published(self) -> list[dict[str, Any]]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx2.Response(200, json={"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize",
                                             "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks"})
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            return httpx2.Response(200, json={"keys": self.published()})
        return httpx2.Response(404)

    def id_token(self, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        at = int(time.time())
        body = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "g-123", "iat": at, "exp": at + 300, "nonce": "n-1",
                "email": "Someone@Example.com", "email_verified": True, "name": "Someone"} | claims
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key or self.key, algorithm="RS256",
                          headers={"kid": kid or self.kid})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def idp() -> FakeIdp:
    return FakeIdp()


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _provider(idp: FakeIdp, clock: Clock | None = None) -> GoogleProvider:
    settings = Settings(google_client_id=CLIENT_ID, google_discovery_url=f"{ISSUER}/.well-known/openid-configuration")
    return GoogleProvider(settings, transport=httpx2.MockTransport(idp.handle), clock=clock or Clock())


async def test_a_good_id_token_gives_the_identity(idp: FakeIdp) -> None:
    identity = await _provider(idp).verify(idp.id_token(), "n-1")
    assert identity == GoogleIdentity(subject="g-123", email="Someone@Example.com", email_verified=True,
                                      name="Someone")


async def _refused(provider: GoogleProvider, token: str, nonce: str = "n-1") -> str:
    with pytest.raises(GoogleSignInFailed) as failure:
        await provider.verify(token, nonce)
    assert failure.value.code == "google_token_invalid"
    return failure.value.reason.lower()


async def test_id_tokens_that_must_be_refused(idp: FakeIdp, other_key: rsa.RSAPrivateKey) -> None:
    provider = _provider(idp)
    assert "signature" in await _refused(provider, idp.id_token(key=other_key))
    assert "audience" in await _refused(provider, idp.id_token(aud="another-client"))
    assert "issuer" in await _refused(provider, idp.id_token(iss="https://evil.example"))
    assert "expired" in await _refused(provider, idp.id_token(exp=int(time.time()) - 120))
    assert "nonce" in await _refused(provider, idp.id_token(), nonce="n-2")
    assert "nonce" in await _refused(provider, idp.id_token(nonce=None))
    assert "azp" in await _refused(provider, idp.id_token(aud=[CLIENT_ID, "another-client"]))
    assert "kid" in await _refused(provider, idp.id_token(kid="unknown"))
    assert "malformed" in await _refused(provider, "not.a.jwt")
    claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "x", "nonce": "n-1", "exp": int(time.time()) + 60}
    for alg, key in (("HS256", "k" * 32), ("none", "")):
        assert "alg" in await _refused(provider, jwt.encode(claims, key, algorithm=alg, headers={"kid": idp.kid}))


async def test_google_style_issuer_without_scheme_only_for_google(idp: FakeIdp) -> None:
    assert "issuer" in await _refused(_provider(idp), idp.id_token(iss="idp.test"))


async def test_an_unknown_kid_refetches_the_keys_at_most_once_a_minute(idp: FakeIdp) -> None:
    clock = Clock()
    provider = _provider(idp, clock)
    await provider.verify(idp.id_token(), "n-1")
    fetches = idp.jwks_fetches
    idp.kid = "key-2"  # the provider rotated its keys
    try:
        await _refused(provider, idp.id_token())  # within a minute of the last fetch: no refetch
        assert idp.jwks_fetches == fetches
        clock.now += 61
        assert (await provider.verify(idp.id_token(), "n-1")).subject == "g-123"
        assert idp.jwks_fetches == fetches + 1
    finally:
        idp.kid = "key-1"


async def test_an_unreachable_provider_is_an_expected_failure() -> None:
    def down(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    settings = Settings(google_client_id=CLIENT_ID, google_discovery_url=f"{ISSUER}/.well-known/openid-configuration")
    provider = GoogleProvider(settings, transport=httpx2.MockTransport(down))
    with pytest.raises(GoogleSignInFailed) as failure:
        await provider.metadata()
    assert failure.value.code == "google_unavailable"


# ---- which account ----------------------------------------------------------------------------------------

class FakeUsers:
    def __init__(self, *users: StoredUser) -> None:
        self.users = {u.id: u for u in users}
        self.link_conflicts = 0

    async def create(self, user: StoredUser) -> None:
        self.users[user.id] = user

    async def get(self, user_id: str) -> StoredUser | None:
        return self.users.get(user_id)

    async def by_email(self, email: str) -> StoredUser | None:
        return next((u for u in self.users.values() if u.email == email), None)

    async def by_google_subject(self, subject: str) -> StoredUser | None:
        return next((u for u in self.users.values() if u.google_sub == subject), None)

    async def link_google(self, user_id: str, subject: str, name: str | None) -> None:
        user = self.users[user_id]
        self.users[user_id] = user.model_copy(update={"google_sub": subject, "name": user.name or name,
                                                      "providers": sorted({*user.providers, "google"})})
        if self.link_conflicts:  # another request of the same person linked first: ours is refused
            self.link_conflicts -= 1
            raise IdentityTaken(subject)

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        self.users[user_id] = self.users[user_id].model_copy(update={"password_hash": password_hash})

    async def clear_password(self, user_id: str) -> None:
        user = self.users[user_id]
        self.users[user_id] = user.model_copy(update={"password_hash": None, "providers": [
            p for p in user.providers if p != "password"]})

    async def delete(self, user: StoredUser) -> None:
        self.users.pop(user.id, None)


class NoSessions:
    """The sessions of accounts that hold none."""

    async def create(self, session: Session, token_hash: str, ttl_s: int) -> None:
        raise AssertionError("choosing the account starts no session")

    async def get(self, session_id: str) -> tuple[Session, dict[str, Any]] | None:
        return None

    async def verify(self, session_id: str, secret_hash: str) -> Session:
        raise SessionInvalid()

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: int, idle_s: int) -> Session:
        raise SessionInvalid()

    async def revoke(self, session_id: str, reason: str, now: int) -> bool:
        return False

    async def for_user(self, user_id: str) -> list[Session]:
        return []

    async def revoked_since(self, since: int) -> list[Session]:
        return []


class NoApiKeys:
    """The API keys of accounts that hold none."""

    async def create(self, key: ApiKey, key_hash: str) -> None:
        raise AssertionError("choosing the account creates no key")

    async def verify(self, key: str) -> ApiKey | None:
        return None

    async def for_user(self, user_id: str) -> list[ApiKey]:
        return []

    async def touch(self, key_id: str, now: int) -> None:
        pass

    async def revoke(self, key_id: str, user_id: str, now: int) -> bool:
        return False


class NoStates:
    async def put(self, state_key: str, pending: PendingSignIn, ttl_s: int) -> None:
        pass

    async def take(self, state_key: str) -> PendingSignIn | None:
        return None


class NoLimits:
    async def hit(self, name: str, limit: int, window_s: int) -> None:
        pass

    async def check(self, name: str, limit: int, window_s: int) -> None:
        pass

    async def count(self, name: str, window_s: int) -> None:
        pass


class UnusedSigner:
    ttl_s = 900

    def access_token(self, user_id: str, email: str, *, session_id: str | None = None,
                     api_key_id: str | None = None, ttl_s: int | None = None) -> str:
        raise AssertionError("choosing the account signs no token")

    def jwks(self) -> dict[str, Any]:
        return {"keys": []}


def _deps(users: FakeUsers) -> Deps:
    return Deps(users=users, sessions=NoSessions(), api_keys=NoApiKeys(), limiter=NoLimits(),
                signer=UnusedSigner(), events=MemoryPublisher(), settings=Settings(), oauth_states=NoStates(),
                throttle=NoThrottle(), audit=MemoryAudit(), alerts=MemoryPublisher())


def _identity(**changes: Any) -> GoogleIdentity:
    values: dict[str, Any] = {"subject": "g-1", "email": "Pat@Example.com", "email_verified": True, "name": "Pat"}
    return GoogleIdentity(**(values | changes))


PASSWORD_USER = StoredUser(id="user-1", email="pat@example.com", created_at=0, providers=["password"],
                           password_hash="$2b$04$x")


async def test_a_verified_email_links_the_existing_account() -> None:
    users = FakeUsers(PASSWORD_USER)
    user = await account_for(_identity(), CLIENT, _deps(users))
    # The password (set by whoever registered the address, unverified) ends with the verified link.
    assert user.id == "user-1" and user.google_sub == "g-1" and user.providers == ["google"]
    assert user.password_hash is None


async def test_an_unverified_email_neither_links_nor_creates() -> None:
    users = FakeUsers(PASSWORD_USER)
    for identity in (_identity(email_verified=False), _identity(email="pat@other.example", email_verified=False),
                     _identity(email=None)):
        with pytest.raises(GoogleSignInFailed) as failure:
            await account_for(identity, CLIENT, _deps(users))
        assert failure.value.code == "google_email_unverified"
    assert users.users == {"user-1": PASSWORD_USER}


async def test_a_known_google_identity_signs_in_whatever_its_email_says_now() -> None:
    linked = PASSWORD_USER.model_copy(update={"google_sub": "g-1"})
    user = await account_for(_identity(email="new@example.com", email_verified=False), CLIENT, _deps(FakeUsers(linked)))
    assert user.id == "user-1"


async def test_an_account_linked_to_another_google_identity_is_not_relinked() -> None:
    users = FakeUsers(PASSWORD_USER.model_copy(update={"google_sub": "g-other"}))
    with pytest.raises(GoogleSignInFailed) as failure:
        await account_for(_identity(), CLIENT, _deps(users))
    assert failure.value.code == "google_account_conflict"


async def test_a_new_person_gets_a_google_account_and_it_is_announced() -> None:
    events = MemoryPublisher()
    deps = _deps(FakeUsers())
    deps.events = events
    user = await account_for(_identity(), CLIENT, deps)
    assert (user.email, user.providers, user.google_sub, user.password_hash) == \
        ("pat@example.com", ["google"], "g-1", None)
    assert [e.type for e in events.published] == [USER_CREATED]
    assert UserCreated.model_validate(events.published[0].data).provider == "google"


async def test_a_concurrent_link_of_the_same_identity_is_looked_up_again() -> None:
    users = FakeUsers(PASSWORD_USER)
    users.link_conflicts = 1
    user = await account_for(_identity(), CLIENT, _deps(users))
    assert user.id == "user-1" and user.google_sub == "g-1"
