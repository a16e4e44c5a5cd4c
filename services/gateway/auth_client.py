"""The gateway's calls to auth's internal endpoints (the gateway itself never routes `/internal`); each call
shows the service credential (shared/service_token.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from services.gateway.api_key_exchange import Exchanged, InvalidApiKey
from shared.errors import Unavailable
from shared.logging import current_request_id
from shared.service_token import service_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevokedSession:
    session_id: str
    user_id: str


class AuthUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__("Could not check the API key right now; try again shortly.", code="auth_unavailable")


def _service_token_refused(response: httpx.Response) -> bool:
    if response.status_code != 401:
        return False
    try:
        return bool(response.json()["error"]["code"] == "invalid_service_token")
    except (ValueError, KeyError, TypeError):
        return False


class AuthClient:
    def __init__(self, http: httpx.AsyncClient, auth_url: str, service_token: SecretStr | None,
                 timeout_s: float = 5.0) -> None:
        self._http = http
        self._base = auth_url.rstrip("/")
        self._service = service_headers(service_token)
        self._timeout = httpx.Timeout(timeout_s)

    def _headers(self) -> dict[str, str]:
        request_id = current_request_id()
        return {**self._service, **({"x-request-id": request_id} if request_id else {})}

    async def exchange_api_key(self, key: str) -> Exchanged:
        try:
            response = await self._http.post(f"{self._base}/internal/api-keys/exchange", json={"key": key},
                                             headers=self._headers(), timeout=self._timeout)
        except httpx.HTTPError as exc:
            log.warning("API key exchange failed", extra={"error": repr(exc)})
            raise AuthUnavailable() from exc
        if _service_token_refused(response):
            # Not the caller's fault: this process and auth do not share one SERVICE_TOKEN (or it is unset).
            log.error("auth refused the gateway's service credential: set the same SERVICE_TOKEN on both")
            raise AuthUnavailable()
        if response.status_code in (400, 401):
            raise InvalidApiKey()
        if response.status_code != 200:
            log.warning("API key exchange failed", extra={"status": response.status_code})
            raise AuthUnavailable()
        try:
            body = response.json()
            return Exchanged(access_token=str(body["access_token"]), expires_in=int(body["expires_in"]),
                             user_id=str(body["user_id"]), key_id=str(body["key_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("API key exchange answered something unexpected", extra={"error": repr(exc)})
            raise AuthUnavailable() from exc

    async def revoked_sessions(self, since: int) -> list[RevokedSession]:
        """Sessions revoked at or after `since` (unix seconds); raises httpx.HTTPError when auth is away."""
        response = await self._http.get(f"{self._base}/internal/revocations", params={"since": since},
                                        headers=self._headers(), timeout=self._timeout)
        response.raise_for_status()
        return [RevokedSession(session_id=str(s["session_id"]), user_id=str(s["user_id"]))
                for s in response.json()["sessions"]]
