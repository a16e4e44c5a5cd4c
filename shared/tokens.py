"""Access-token verification against auth's JWKS, with caching.

Every service verifies tokens itself; nobody trusts an identity header forwarded by another service.
Keys are cached for `ttl_s`; an unknown `kid` (auth rotated its key) triggers one refetch, at most every
`min_refresh_s`, so a flood of forged kids cannot turn into a flood of JWKS requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from jwt import PyJWK

from shared.errors import Unauthorized, Unavailable

ALGORITHMS = ["RS256", "ES256", "EdDSA"]


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str | None
    session_id: str | None = None  # a signed-in person's session
    api_key_id: str | None = None  # a program's API key (exchanged by the gateway)
    expires_at: int = 0


RevocationCheck = Callable[[Principal], Awaitable[bool]]


class JWKSVerifier:
    def __init__(self, jwks_url: str, *, issuer: str, audience: str, ttl_s: float = 300,
                 min_refresh_s: float = 5, http: httpx.AsyncClient | None = None,
                 fetch: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                 revoked: RevocationCheck | None = None) -> None:
        self._url = jwks_url
        self._revoked = revoked
        self._fetch = fetch or self._fetch_http
        self._issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_s
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if self._keys and (age < self._min_refresh_s or (not force and age < self._ttl_s)):
                return
            try:
                keys = (await self._fetch())["keys"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                if self._keys:
                    return  # keep serving the keys we have while auth is briefly away
                raise Unavailable("Token verification keys are unavailable; try again shortly.") from exc
            self._keys = {k["kid"]: PyJWK.from_dict(k) for k in keys if "kid" in k}
            self._fetched_at = time.monotonic()

    async def _fetch_http(self) -> dict[str, Any]:
        response = await self._http.get(self._url)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def _key(self, kid: str) -> PyJWK:
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        if kid not in self._keys:
            raise Unauthorized("Invalid access token: unknown signing key.")
        return self._keys[kid]

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid access token.") from exc
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=ALGORITHMS, audience=self._audience, issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Access token expired.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid access token.") from exc
        if claims.get("typ", "access") != "access":
            raise Unauthorized("Not an access token.")
        principal = Principal(user_id=str(claims["sub"]), email=claims.get("email"), session_id=claims.get("sid"),
                              api_key_id=claims.get("akid"), expires_at=int(claims["exp"]))
        if self._revoked is not None and await self._revoked(principal):
            raise Unauthorized("This session was signed out or its key revoked.", code="token_revoked")
        return principal

    async def aclose(self) -> None:
        await self._http.aclose()


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("You didn't provide an API key or access token. Send 'Authorization: Bearer <token>'.")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the verified caller. The app's lifespan puts a verifier on `app.state`."""
    verifier: JWKSVerifier = request.app.state.verifier
    principal = await verifier.verify(bearer_token(request))
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(current_principal)]
