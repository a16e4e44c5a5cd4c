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
    if origin is not None:
        expected = urlsplit(settings.base_url)
        got = urlsplit(origin)
        if (got.scheme, got.netloc) != (expected.scheme, expected.netloc):
            raise Forbidden("Cross-site request refused.", code="csrf_origin_mismatch")
    cookie = request.cookies.get(settings.csrf_cookie, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not header or not hmac.compare_digest(cookie, header):
        raise Forbidden("Missing or wrong CSRF token: send the llmt_csrf cookie's value in X-CSRF-Token.",
                        code="csrf_failed")
