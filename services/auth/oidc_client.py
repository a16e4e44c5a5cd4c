"""The OpenID Connect client auth speaks to Google with (any OpenID provider, in the tests): discovery, the
authorization URL with state, nonce and PKCE (S256), the code exchange, and ID token validation.

The protocol is authlib's: its OAuth 2 client builds the authorization URL and the token request, its PKCE
helpers make the verifier and challenge, and its `CodeIDToken` checks the ID token's claims after joserfc
(authlib's own JOSE library, which replaces the deprecated `authlib.jose`) has checked the signature. What
stays here is what authlib leaves to a framework: the discovery document and the provider's keys are
fetched with explicit timeouts and cached for an hour, and an unknown `kid` refetches the keys at most once
a minute (authlib's framework clients cache them forever, and would refetch on every unknown `kid`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2 import OAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from services.auth.oauth_states import PendingSignIn
from services.auth.settings import Settings

SCOPES = "openid email profile"
HTTP_TIMEOUT = httpx2.Timeout(10.0, connect=3.0)
METADATA_TTL_S = 3600
JWKS_TTL_S = 3600
JWKS_REFETCH_AFTER_S = 60  # an unknown `kid` refetches the keys (a rotation), at most this often
CLOCK_SKEW_S = 60
ID_TOKEN_ALGORITHMS = ["RS256"]
CODE_VERIFIER_CHARS = 64  # of [A-Za-z0-9]: within RFC 7636's 43..128
# Google's ID tokens may carry the issuer without its scheme.
_GOOGLE_ISSUER = "https://accounts.google.com"
# How a refused claim reads in the log.
_CLAIM_WORDS = {"iss": "issuer", "aud": "audience", "exp": "expired", "sub": "subject"}


class GoogleSignInFailed(Exception):
    """An expected end of a sign-in: `code` is what the browser sees, `reason` what the log says."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


@dataclass(frozen=True)
class GoogleIdentity:
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


def new_code_verifier() -> str:
    return str(generate_token(CODE_VERIFIER_CHARS))


def authorization_url(metadata: ProviderMetadata, client_id: str, state: str, pending: PendingSignIn) -> str:
    """Where the browser goes to sign in: a code request carrying our state, nonce and S256 challenge."""
    client = OAuth2Client(None, client_id=client_id, scope=SCOPES, code_challenge_method="S256")
    url, _ = client.create_authorization_url(metadata.authorization_endpoint, state=state,
                                             code_verifier=pending.code_verifier, nonce=pending.nonce,
                                             redirect_uri=pending.redirect_uri)
    return str(url)


class GoogleProvider:
    """The OpenID provider as this service sees it: its discovery document and signing keys (cached), the
    code exchange, and ID token validation."""

    def __init__(self, settings: Settings, transport: httpx2.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._transport = transport
        self._clock = clock
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._jwks: tuple[float, KeySet | None] | None = None

    @property
    def client_id(self) -> str:
        if self._settings.google_client_id is None:
            raise GoogleSignInFailed("google_not_configured", "GOOGLE_CLIENT_ID is not set")
        return self._settings.google_client_id

    def _oauth_client(self) -> AsyncOAuth2Client:
        # Sign-ins are rare: a client per call keeps no connections (or event loop) alive between them.
        secret = self._settings.google_client_secret
        return AsyncOAuth2Client(
            client_id=self.client_id, client_secret=secret.get_secret_value() if secret else None,
            token_endpoint_auth_method="client_secret_post" if secret else "none",
            timeout=HTTP_TIMEOUT, transport=self._transport)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT, transport=self._transport) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
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
        try:
            async with self._oauth_client() as client:
                token = await client.fetch_token(metadata.token_endpoint, grant_type="authorization_code",
                                                 code=code, code_verifier=code_verifier, redirect_uri=redirect_uri)
        except OAuthError as exc:
            raise GoogleSignInFailed("google_exchange_failed",
                                     f"token endpoint refused the code ({str(exc.error)[:64]})") from exc
        except (httpx2.HTTPError, ValueError) as exc:
            raise GoogleSignInFailed("google_exchange_failed", f"token endpoint failed: {exc!r}") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise GoogleSignInFailed("google_exchange_failed", "token response has no id_token")
        return id_token

    async def _keys(self, max_age_s: float) -> tuple[float, KeySet | None]:
        if self._jwks is None or self._clock() - self._jwks[0] >= max_age_s:
            document = await self._get_json((await self.metadata()).jwks_uri)
            self._jwks = (self._clock(), _signing_keys(document))
        return self._jwks

    async def _decode(self, id_token: str) -> jwt.Token:
        """The token, its signature checked against the provider's keys (refetched for an unknown `kid`)."""
        fetched_at, keys = await self._keys(JWKS_TTL_S)
        try:
            return _decode_signed(id_token, keys)
        except InvalidKeyIdError as exc:
            if self._clock() - fetched_at < JWKS_REFETCH_AFTER_S:
                raise _no_key(exc) from exc
        try:
            return _decode_signed(id_token, (await self._keys(0))[1])
        except InvalidKeyIdError as exc:
            raise _no_key(exc) from exc

    async def verify(self, id_token: str, nonce: str) -> GoogleIdentity:
        """Signature by one of the provider's keys, `iss`, `aud` (and `azp`), `exp`, `iat`, and our nonce."""
        metadata = await self.metadata()
        token = await self._decode(id_token)
        issuers = [metadata.issuer] + (["accounts.google.com"] if metadata.issuer == _GOOGLE_ISSUER else [])
        options = {"iss": {"essential": True, "values": issuers},
                   "aud": {"essential": True, "value": self.client_id},
                   "nonce": {"essential": True, "value": nonce}}
        claims = CodeIDToken(token.claims, token.header, options, {"nonce": nonce, "client_id": self.client_id})
        try:
            claims.validate(leeway=CLOCK_SKEW_S)
        except ExpiredTokenError as exc:
            raise GoogleSignInFailed("google_token_invalid", "ID token refused: expired") from exc
        except ClaimError as exc:
            refused = ", ".join(_CLAIM_WORDS.get(c, c) for c in exc.claim.split(","))
            raise GoogleSignInFailed("google_token_invalid", f"ID token refused: {refused} ({exc})") from exc
        except JoseError as exc:
            raise GoogleSignInFailed("google_token_invalid", f"ID token refused: {exc}") from exc
        email = claims.get("email")
        name = claims.get("name")
        return GoogleIdentity(subject=str(claims["sub"]), email=email if isinstance(email, str) else None,
                              email_verified=claims.get("email_verified") in (True, "true"),
                              name=name[:200] if isinstance(name, str) and name else None)


def _decode_signed(id_token: str, keys: KeySet | None) -> jwt.Token:
    """The token if one of `keys` signed it with an algorithm we allow; InvalidKeyIdError when none of them
    has its `kid`."""
    if keys is None:
        raise InvalidKeyIdError("the provider publishes no usable signing key")
    try:
        return jwt.decode(id_token, keys, registry=JWSRegistry(algorithms=ID_TOKEN_ALGORITHMS,
                                                                strict_check_header=False))
    except InvalidKeyIdError:
        raise
    except BadSignatureError as exc:
        raise GoogleSignInFailed("google_token_invalid", "ID token signature does not verify") from exc
    except UnsupportedAlgorithmError as exc:
        raise GoogleSignInFailed("google_token_invalid", f"ID token alg refused: {exc}") from exc
    except (JoseError, ValueError) as exc:
        raise GoogleSignInFailed("google_token_invalid", f"malformed ID token: {exc}") from exc


def _no_key(exc: InvalidKeyIdError) -> GoogleSignInFailed:
    return GoogleSignInFailed("google_token_invalid", f"no published signing key with this kid ({exc})")


def _signing_keys(document: dict[str, Any]) -> KeySet | None:
    """The keys published for signatures; None when there are none we can use."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        return None
    signing = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    try:
        return KeySet.import_key_set({"keys": signing})
    except (JoseError, ValueError, TypeError, KeyError):
        return None
