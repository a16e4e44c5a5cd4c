"""Sign in with Google: OpenID Connect's authorization-code flow with state, nonce and PKCE (S256).

`GET /auth/google/login` sends the browser to the provider's consent page. `GET /auth/google/callback`
takes the single-use state (bound to this browser by a cookie holding its hash), trades the code for an ID
token, verifies the token against the provider's published keys, then finds, links or creates the account
and starts a session. Redirect mode lands on `next` with the session cookies set; popup mode answers a
page that hands the session to the window that opened it (postMessage to our own origin only) and closes.
A failure never answers 500: it lands on `/login?error=<code>`, or posts `llm-tuner:error` to the opener.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.auth import handlers
from services.auth.cookies import set_session_cookies
from services.auth.models import EMAIL, StoredUser, normalise_email
from services.auth.oauth_states import Mode, PendingSignIn
from services.auth.sessions import now
from services.auth.settings import Settings
from services.auth.store import EmailTaken, IdentityTaken
from services.auth.web import client_ip, public_base_url
from shared.errors import NotFound
from shared.web import app_deps

log = logging.getLogger(__name__)

Deps = Annotated[handlers.Deps, Depends(app_deps)]

CALLBACK_PATH = "/auth/google/callback"
SCOPES = "openid email profile"
STATE_TTL_S = 600
STATE_COOKIE = "llmt_google_state"
DEFAULT_NEXT = "/dashboard"
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
METADATA_TTL_S = 3600
JWKS_TTL_S = 3600
JWKS_REFETCH_AFTER_S = 60  # an unknown `kid` refetches the keys (a rotation), at most this often
CLOCK_SKEW_S = 60
ID_TOKEN_ALGORITHMS = ["RS256"]
# Google's ID tokens may carry the issuer without its scheme.
_GOOGLE_ISSUER = "https://accounts.google.com"


class GoogleSignInFailed(Exception):
    """An expected end of a sign-in: `code` is what the browser sees, `reason` what the log says."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


# ---- pure parts -------------------------------------------------------------------------------------------

def new_code_verifier() -> str:
    return secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]: within RFC 7636's 43..128


def code_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def state_key(state: str) -> str:
    """What the store and the browser's cookie hold instead of the state itself."""
    return hashlib.sha256(state.encode()).hexdigest()


_NOT_IN_A_SAFE_PATH = re.compile(r"[\x00-\x20\x7f\\]")  # controls, spaces, and `\` (browsers read it as `/`)


def safe_next(value: str | None) -> str:
    """Where to land after signing in: a path on this site, else the dashboard. `//evil.example`,
    `/\\evil.example`, `https://...` and anything with control characters would leave the site."""
    if (not value or len(value) > 1024 or not value.startswith("/") or value.startswith("//")
            or _NOT_IN_A_SAFE_PATH.search(value)):
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return value


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def authorization_url(metadata: ProviderMetadata, client_id: str, state: str, pending: PendingSignIn) -> str:
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": pending.redirect_uri,
              "scope": SCOPES, "state": state, "nonce": pending.nonce,
              "code_challenge": code_challenge(pending.code_verifier), "code_challenge_method": "S256"}
    endpoint = metadata.authorization_endpoint
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# ---- the provider -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GoogleIdentity:
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


class GoogleProvider:
    """The OpenID provider as this service sees it: its discovery document and signing keys (fetched with
    explicit timeouts, cached), the code exchange, and ID token verification."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Any = time.monotonic) -> None:
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._jwks: tuple[float, list[dict[str, Any]]] | None = None

    @property
    def client_id(self) -> str:
        if self._settings.google_client_id is None:
            raise GoogleSignInFailed("google_not_configured", "GOOGLE_CLIENT_ID is not set")
        return self._settings.google_client_id

    def _client(self) -> httpx.AsyncClient:
        # Sign-ins are rare: a client per call keeps no connections (or event loop) alive between them.
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT, transport=self._transport)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._client() as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise GoogleSignInFailed("google_unavailable", f"GET {url} failed: {exc!r}") from exc
        if not isinstance(body, dict):
            raise GoogleSignInFailed("google_unavailable", f"GET {url}: not a JSON object")
        return body

    async def metadata(self) -> ProviderMetadata:
        if self._metadata and self._clock() - self._metadata[0] < METADATA_TTL_S:
            return self._metadata[1]
        document = await self._get_json(self._settings.google_discovery_url)
        fields = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        if not all(isinstance(document.get(f), str) and document[f] for f in fields):
            raise GoogleSignInFailed("google_unavailable", "discovery document lacks " + ", ".join(fields))
        metadata = ProviderMetadata(**{f: document[f] for f in fields})
        self._metadata = (self._clock(), metadata)
        return metadata

    async def exchange(self, code: str, code_verifier: str, redirect_uri: str) -> str:
        """The authorization code for an ID token, proving with the PKCE verifier and the client secret."""
        metadata = await self.metadata()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": code_verifier}
        if self._settings.google_client_secret is not None:
            form["client_secret"] = self._settings.google_client_secret.get_secret_value()
        try:
            async with self._client() as client:
                response = await client.post(metadata.token_endpoint, data=form,
                                             headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise GoogleSignInFailed("google_exchange_failed", f"token endpoint unreachable: {exc!r}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            raise GoogleSignInFailed("google_exchange_failed",
                                     f"token endpoint answered {response.status_code} ({str(error)[:64]})")
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise GoogleSignInFailed("google_exchange_failed", "token response has no id_token")
        return id_token

    async def _keys(self, max_age_s: float) -> tuple[float, list[dict[str, Any]]]:
        if self._jwks is None or self._clock() - self._jwks[0] >= max_age_s:
            document = await self._get_json((await self.metadata()).jwks_uri)
            keys = document.get("keys")
            self._jwks = (self._clock(), [k for k in keys if isinstance(k, dict)] if isinstance(keys, list) else [])
        return self._jwks

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        fetched_at, keys = await self._keys(JWKS_TTL_S)
        key = _find_key(keys, kid)
        if key is None and self._clock() - fetched_at >= JWKS_REFETCH_AFTER_S:
            key = _find_key((await self._keys(0))[1], kid)
        if key is None:
            raise GoogleSignInFailed("google_token_invalid", f"no published signing key with kid={kid!r}")
        return key

    async def verify(self, id_token: str, nonce: str) -> GoogleIdentity:
        """Signature by one of the provider's keys, `iss`, `aud` (and `azp`), `exp`, `iat`, and our nonce."""
        metadata = await self.metadata()
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
        except jwt.PyJWTError as exc:
            raise GoogleSignInFailed("google_token_invalid", f"malformed ID token: {exc}") from exc
        key = await self._signing_key(kid if isinstance(kid, str) else None)
        issuers = [metadata.issuer] + (["accounts.google.com"] if metadata.issuer == _GOOGLE_ISSUER else [])
        try:
            claims = jwt.decode(id_token, key=key, algorithms=ID_TOKEN_ALGORITHMS, audience=self.client_id,
                                issuer=issuers, leeway=CLOCK_SKEW_S,
                                options={"require": ["iss", "aud", "exp", "iat", "sub"]})
        except jwt.PyJWTError as exc:
            raise GoogleSignInFailed("google_token_invalid", f"ID token refused: {exc}") from exc
        audience = claims["aud"]
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != self.client_id:
            raise GoogleSignInFailed("google_token_invalid", "ID token has several audiences and azp is not ours")
        if not hmac.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
            raise GoogleSignInFailed("google_token_invalid", "ID token nonce does not match this sign-in")
        email = claims.get("email")
        name = claims.get("name")
        return GoogleIdentity(subject=str(claims["sub"]), email=email if isinstance(email, str) else None,
                              email_verified=claims.get("email_verified") in (True, "true"),
                              name=name[:200] if isinstance(name, str) and name else None)


def _find_key(keys: list[dict[str, Any]], kid: str | None) -> jwt.PyJWK | None:
    candidates = [k for k in keys if k.get("use", "sig") == "sig" and (kid is None or k.get("kid") == kid)]
    if len(candidates) != 1:
        return None
    try:
        return jwt.PyJWK.from_dict(candidates[0])
    except jwt.PyJWTError:
        return None


# ---- the account ------------------------------------------------------------------------------------------

async def sign_in_with_google(identity: GoogleIdentity, deps: handlers.Deps) -> handlers.SessionGrant:
    user = await _account_for(identity, deps)
    return await handlers.start_session(deps, user, "google")


async def _account_for(identity: GoogleIdentity, deps: handlers.Deps, retried: bool = False) -> StoredUser:
    """Known Google identity: its account. Otherwise the account with this email, linked, but only when
    Google vouches for the email; otherwise a new account."""
    user = await deps.users.by_google_subject(identity.subject)
    if user is not None:
        return user
    email = normalise_email(identity.email or "")
    if not identity.email_verified or not EMAIL.match(email):
        raise GoogleSignInFailed("google_email_unverified", "Google does not vouch for an email on this account")
    existing = await deps.users.by_email(email)
    try:
        if existing is not None:
            return await _link(existing, identity, deps)
        return await _create(email, identity, deps)
    except (IdentityTaken, EmailTaken) as exc:
        if retried:  # a concurrent sign-in of the same person: whatever it wrote is what we use
            raise GoogleSignInFailed("google_account_conflict", f"concurrent change: {exc!r}") from exc
        return await _account_for(identity, deps, retried=True)


async def _link(user: StoredUser, identity: GoogleIdentity, deps: handlers.Deps) -> StoredUser:
    if user.google_sub and user.google_sub != identity.subject:
        raise GoogleSignInFailed("google_account_conflict", "the account with this email is linked to another "
                                 "Google identity")
    await deps.users.link_google(user.id, identity.subject, identity.name)
    if user.password_hash is not None:
        await handlers.secure_after_verified_link(deps, user)
    log.info("google identity linked", extra={"user_id": user.id})
    return await deps.users.get(user.id) or user


async def _create(email: str, identity: GoogleIdentity, deps: handlers.Deps) -> StoredUser:
    user = StoredUser(id=f"user-{uuid.uuid4().hex[:24]}", email=email, name=identity.name, created_at=now(),
                      providers=["google"], google_sub=identity.subject)
    await deps.users.create(user)
    await handlers.announce_user_created(deps, user, "google")
    return user


# ---- answers to the browser -------------------------------------------------------------------------------

# Static, so the CSP can allow exactly this script by its hash; the data travels in a JSON block.
_POPUP_SCRIPT = (
    'var r=JSON.parse(document.getElementById("llmt-result").textContent);'
    "if(window.opener){window.opener.postMessage(r.message,r.targetOrigin);}window.close();"
)
_POPUP_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_POPUP_SCRIPT.encode()).digest()).decode()
POPUP_CSP = (f"default-src 'none'; script-src 'sha256-{_POPUP_SCRIPT_HASH}'; base-uri 'none'; "
             "form-action 'none'; frame-ancestors 'none'")
_NO_LEAKS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


def _json_for_html(value: Any) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def popup_page(message: dict[str, Any], target_origin: str) -> HTMLResponse:
    text = "Signed in. You can close this window." if message["type"] == "llm-tuner:session" else \
        "Sign-in did not complete. You can close this window."
    data = _json_for_html({"message": message, "targetOrigin": target_origin})
    html = ('<!doctype html><html><head><meta charset="utf-8"><title>LLM Tuner</title></head><body>'
            f'<p>{text}</p><script type="application/json" id="llmt-result">{data}</script>'
            f"<script>{_POPUP_SCRIPT}</script></body></html>")
    return HTMLResponse(html, headers={**_NO_LEAKS, "Content-Security-Policy": POPUP_CSP})


def _failure(code: str, mode: Mode, base_url: str) -> Response:
    if mode == "popup":
        return popup_page({"type": "llm-tuner:error", "code": code}, origin_of(base_url))
    return RedirectResponse(f"/login?{urlencode({'error': code})}", status_code=302, headers=_NO_LEAKS)


def _success(grant: handlers.SessionGrant, pending: PendingSignIn, base_url: str) -> Response:
    if pending.mode == "popup":
        message = {"type": "llm-tuner:session", "access_token": grant.body["access_token"],
                   "expires_in": grant.body["expires_in"], "user": grant.body["user"]}
        return popup_page(message, origin_of(base_url))
    return RedirectResponse(pending.next_path, status_code=302, headers=_NO_LEAKS)


def _binding(request: Request) -> tuple[Mode, str | None]:
    """The sign-in this browser started: its mode and the hash of its state, from the cookie."""
    mode, _, key = request.cookies.get(STATE_COOKIE, "").partition(".")
    return ("popup" if mode == "popup" else "redirect"), key or None


async def _take_bound(state: str | None, bound_key: str | None, deps: handlers.Deps) -> PendingSignIn:
    if not state or not bound_key or not hmac.compare_digest(state_key(state), bound_key):
        raise GoogleSignInFailed("google_state_mismatch", "state missing or not the one this browser started")
    pending = await deps.oauth_states.take(bound_key)
    if pending is None:
        raise GoogleSignInFailed("google_state_expired", "state unknown, already used or expired")
    return pending


# ---- routes -----------------------------------------------------------------------------------------------

def build_router(settings: Settings, provider: GoogleProvider | None = None) -> APIRouter:
    router = APIRouter()
    google = provider or GoogleProvider(settings)

    def set_binding(response: Response, value: str, max_age: int) -> None:
        # Lax, not Strict: the callback is a top-level navigation coming from the provider's site.
        response.set_cookie(STATE_COOKIE, value, max_age=max_age, path=CALLBACK_PATH, httponly=True,
                            secure=settings.cookie_secure, samesite="lax")

    async def admit(request: Request, deps: handlers.Deps) -> None:
        if settings.google_client_id is None:
            raise NotFound("Google sign-in is not configured on this server.", code="google_not_configured")
        limit, window = settings.google_limit_per_ip
        await deps.limiter.hit(f"google:ip:{client_ip(request, settings)}", limit, window)

    @router.get("/auth/providers")
    async def providers() -> dict[str, bool]:
        return {"password": True, "google": settings.google_client_id is not None}

    @router.get("/auth/google/login")
    async def login(request: Request, d: Deps, mode: Mode = "redirect",
                    next_path: Annotated[str | None, Query(alias="next")] = None) -> Response:
        await admit(request, d)
        base_url = public_base_url(request, settings)
        state = secrets.token_urlsafe(32)
        pending = PendingSignIn(nonce=secrets.token_urlsafe(32), code_verifier=new_code_verifier(), mode=mode,
                                next_path=safe_next(next_path), redirect_uri=base_url + CALLBACK_PATH,
                                created_at=now())
        try:
            location = authorization_url(await google.metadata(), google.client_id, state, pending)
        except GoogleSignInFailed as failure:
            log.warning("google sign-in could not start", extra={"code": failure.code, "reason": failure.reason})
            return _failure(failure.code, mode, base_url)
        await d.oauth_states.put(state_key(state), pending, STATE_TTL_S)
        response = RedirectResponse(location, status_code=302, headers=_NO_LEAKS)
        set_binding(response, f"{mode}.{state_key(state)}", STATE_TTL_S)
        return response

    @router.get(CALLBACK_PATH)
    async def callback(request: Request, d: Deps, code: str | None = None, state: str | None = None,
                       error: str | None = None) -> Response:
        await admit(request, d)
        base_url = public_base_url(request, settings)
        mode, bound_key = _binding(request)
        try:
            if error is not None:
                await _end_refused_sign_in(error, state, bound_key, d)
            pending = await _take_bound(state, bound_key, d)
            mode = pending.mode
            if not code:
                raise GoogleSignInFailed("google_exchange_failed", "callback without a code")
            id_token = await google.exchange(code, pending.code_verifier, pending.redirect_uri)
            identity = await google.verify(id_token, pending.nonce)
            grant = await sign_in_with_google(identity, d)
        except GoogleSignInFailed as failure:
            log.warning("google sign-in failed", extra={"code": failure.code, "reason": failure.reason})
            response = _failure(failure.code, mode, base_url)
            if failure.code != "google_state_mismatch":  # another browser's callback leaves ours pending
                set_binding(response, "", 0)
            return response
        response = _success(grant, pending, base_url)
        set_session_cookies(response, grant, settings)
        set_binding(response, "", 0)
        return response

    return router


async def _end_refused_sign_in(error: str, state: str | None, bound_key: str | None, deps: handlers.Deps) -> None:
    """The provider sent the browser back with an error (the person said no, say). Nothing is signed in, so
    the state need not match; when it does, the pending sign-in is removed."""
    if state and bound_key and hmac.compare_digest(state_key(state), bound_key):
        await deps.oauth_states.take(bound_key)
    code = "google_denied" if error == "access_denied" else "google_provider_error"
    raise GoogleSignInFailed(code, f"the provider answered error={error[:64]!r}")
