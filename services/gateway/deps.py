"""What the gateway's handlers depend on, as protocols with only the methods they use, and the `Deps` that
holds them. bootstrap.py wires the real ones; unit tests pass fakes or the in-memory originals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.gateway.auth_client import RevokedSession
from shared.tokens import Principal


class TokenVerifier(Protocol):
    """Checks an access token's signature and claims, and that it was not revoked (shared.tokens.JWKSVerifier)."""

    async def verify(self, token: str) -> Principal: ...


class ApiKeyTokens(Protocol):
    """A program's API key traded for an access token, and the traded tokens forgotten again
    (services/gateway/api_key_exchange.ApiKeyCache)."""

    async def access_token(self, key: str) -> str: ...

    def evict_key(self, key_id: str) -> int: ...

    def evict_user(self, user_id: str) -> int: ...


class RevocationList(Protocol):
    """What this replica refuses although the signature is good (services/gateway/revocations.RevocationSet)."""

    def deny_session(self, session_id: str, until: float) -> None: ...

    def deny_user(self, user_id: str, until: float) -> None: ...

    def deny_api_key(self, key_id: str, until: float) -> None: ...

    def denies(self, *, session_id: str | None = None, user_id: str | None = None,
               api_key_id: str | None = None) -> bool: ...


class LiveStreams(Protocol):
    """This replica's open event streams, ended when what authenticated them is revoked
    (services/gateway/live.LiveHub)."""

    def end(self, user_id: str, *, session_id: str | None = None, api_key_id: str | None = None) -> int: ...


class RevokedSessions(Protocol):
    """auth's list of recently revoked sessions (services/gateway/auth_client.AuthClient)."""

    async def revoked_sessions(self, since: int) -> list[RevokedSession]: ...


@dataclass
class Deps:
    verifier: TokenVerifier
    api_keys: ApiKeyTokens
    revocations: RevocationList
    auth: RevokedSessions
    live: LiveStreams
    access_token_ttl_s: int  # no token auth signed lives longer: how long a denial has to last at most
