"""The credential services show each other: every path under `/internal` answers only a request whose
`X-Service-Token` header equals the process's SERVICE_TOKEN (a secret every process of one deployment shares).

The gateway never routes `/internal`, but the network alone is not the boundary: any task on it could call
auth's key exchange or revocation list. Without a token configured nothing reaches `/internal` (development
included: the local cluster sets one); outside development a service does not start without a real one
(`require_service_token`).
"""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import error_response
from shared.settings import ServiceSettings, is_placeholder

HEADER = "X-Service-Token"
INTERNAL_PREFIX = "/internal"


class ServiceTokenMissing(RuntimeError):
    """A deployment's process started without the shared service credential."""


def require_service_token(settings: ServiceSettings) -> None:
    """At start-up: outside development the token must be set and not a guide's example value."""
    if settings.is_development:
        return
    token = settings.service_token
    if token is None or is_placeholder(token.get_secret_value()):
        raise ServiceTokenMissing(f"SERVICE_TOKEN must be set to a real secret when "
                                  f"ENVIRONMENT={settings.environment}")


def service_headers(token: SecretStr | None) -> dict[str, str]:
    """The header a call to another service's `/internal` route carries."""
    return {HEADER: token.get_secret_value()} if token is not None else {}


def is_internal(path: str) -> bool:
    return path == INTERNAL_PREFIX or path.startswith(INTERNAL_PREFIX + "/")


class ServiceTokenMiddleware:
    """Pure ASGI: a request under `/internal` without the right token gets 401 before any route runs."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self._token = token.get_secret_value().encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_internal(scope["path"]) and not self._allowed(scope):
            response = error_response(401, "This endpoint is for the platform's services only.",
                                      "authentication_error", None, "invalid_service_token")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if self._token is None:
            return False
        presented = Headers(scope=scope).get(HEADER, "").encode("latin-1")
        return hmac.compare_digest(presented, self._token)
