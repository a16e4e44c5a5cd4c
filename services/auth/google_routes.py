"""Sign in with Google, the HTTP side: `GET /auth/google/login` sends the browser to the provider's consent
page; `GET /auth/google/callback` takes the single-use state (bound to this browser by a cookie holding its
hash), has the OpenID client (oidc_client.py) trade the code for a verified identity, lets account_linking.py
pick the account, and starts a session. Redirect mode lands on `next` with the session cookies set; popup mode
answers a page that hands the session to the window that opened it (postMessage to our own origin only) and
closes. A failure never answers 500: it lands on `/login?error=<code>`, or posts `llm-tuner:error` to the opener.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.auth.account_linking import sign_in_with_google
from services.auth.cookies import set_session_cookies
from services.auth.deps import Deps as AuthDeps
from services.auth.handlers import SessionGrant
from services.auth.oauth_states import Mode, PendingSignIn
from services.auth.oidc_client import GoogleProvider, GoogleSignInFailed, authorization_url, new_code_verifier
from services.auth.proxy_headers import client_info, client_ip
from services.auth.sessions import now
from services.auth.settings import Settings
from shared.errors import NotFound
from shared.web import app_deps

log = logging.getLogger(__name__)

Deps = Annotated[AuthDeps, Depends(app_deps)]

CALLBACK_PATH = "/auth/google/callback"
STATE_TTL_S = 600
STATE_COOKIE = "llmt_google_state"
DEFAULT_NEXT = "/dashboard"


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


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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


def _success(grant: SessionGrant, pending: PendingSignIn, base_url: str) -> Response:
    if pending.mode == "popup":
        message = {"type": "llm-tuner:session", "access_token": grant.body["access_token"],
                   "expires_in": grant.body["expires_in"], "user": grant.body["user"]}
        return popup_page(message, origin_of(base_url))
    return RedirectResponse(pending.next_path, status_code=302, headers=_NO_LEAKS)


def _binding(request: Request) -> tuple[Mode, str | None]:
    """The sign-in this browser started: its mode and the hash of its state, from the cookie."""
    mode, _, key = request.cookies.get(STATE_COOKIE, "").partition(".")
    return ("popup" if mode == "popup" else "redirect"), key or None


async def _take_bound(state: str | None, bound_key: str | None, deps: AuthDeps) -> PendingSignIn:
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

    async def admit(request: Request, deps: AuthDeps) -> None:
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
        base_url = settings.base_url
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
        base_url = settings.base_url
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
            grant = await sign_in_with_google(identity, client_info(request, settings), d)
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


async def _end_refused_sign_in(error: str, state: str | None, bound_key: str | None, deps: AuthDeps) -> None:
    """The provider sent the browser back with an error (the person said no, say). Nothing is signed in, so
    the state need not match; when it does, the pending sign-in is removed."""
    if state and bound_key and hmac.compare_digest(state_key(state), bound_key):
        await deps.oauth_states.take(bound_key)
    code = "google_denied" if error == "access_denied" else "google_provider_error"
    raise GoogleSignInFailed(code, f"the provider answered error={error[:64]!r}")
