"""The browser's session: the refresh token in an HttpOnly cookie scoped to /auth, and a double-submit
CSRF token (readable by the page, echoed in X-CSRF-Token) guarding the routes that act on that cookie."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from services.auth.handlers import SessionGrant
from services.auth.settings import Settings
from shared.errors import Forbidden

CSRF_HEADER = "x-csrf-token"
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def accepted_origins(settings: Settings) -> set[str]:
    """Where our own page runs: BASE_URL's origin. In development a loopback BASE_URL also stands for its
    other loopback names at the same port (http://localhost:5000 and http://127.0.0.1:5000 are one machine)."""
    base = urlsplit(settings.base_url)
    origins = {f"{base.scheme}://{base.netloc}"}
    if settings.is_development and base.hostname in ("localhost", "127.0.0.1", "::1"):
        port = f":{base.port}" if base.port else ""
        origins |= {f"{base.scheme}://{host}{port}" for host in _LOOPBACK}
    return origins


def set_session_cookies(response: Response, grant: SessionGrant, settings: Settings) -> None:
    response.set_cookie(settings.refresh_cookie, grant.refresh_token, max_age=grant.max_age_s, path="/auth",
                        httponly=True, secure=settings.cookie_secure, samesite="strict")
    response.set_cookie(settings.csrf_cookie, grant.csrf_token, max_age=grant.max_age_s, path="/",
                        httponly=False, secure=settings.cookie_secure, samesite="strict")
    response.headers["Cache-Control"] = "no-store"


def clear_session_cookies(response: Response, settings: Settings) -> None:
    response.delete_cookie(settings.refresh_cookie, path="/auth", secure=settings.cookie_secure,
                           httponly=True, samesite="strict")
    response.delete_cookie(settings.csrf_cookie, path="/", secure=settings.cookie_secure, samesite="strict")


def require_csrf(request: Request, settings: Settings) -> None:
    """A state-changing request that relies on the session cookie must prove it comes from our page."""
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") not in accepted_origins(settings):
        raise Forbidden("Cross-site request refused.", code="csrf_origin_mismatch")
    cookie = request.cookies.get(settings.csrf_cookie, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie, header):
        raise Forbidden("Missing or wrong CSRF token: send the llmt_csrf cookie's value in X-CSRF-Token.",
                        code="csrf_failed")
