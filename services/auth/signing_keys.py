"""The access-token signing key (RSA, RS256) and the JWKS that publishes its public half."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from services.auth.settings import Settings


class ConfigurationError(RuntimeError):
    pass


def _load_or_create_dev_key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        tmp.replace(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{path} does not hold an RSA private key")
    return key


def _public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """The public half as a JWK, its `kid` the RFC 7638 thumbprint (stable for the same key)."""
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def _load_pem(pem: str, name: str) -> rsa.RSAPrivateKey:
    loaded = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{name} must be an RSA private key in PEM")
    return loaded


class Signer:
    """Signs with the current key; the JWKS also publishes the previous key during a rotation, so tokens
    it signed stay valid until they expire."""

    def __init__(self, key: rsa.RSAPrivateKey, *, issuer: str, audience: str, ttl_s: int,
                 previous: rsa.RSAPrivateKey | None = None) -> None:
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s
        current = _public_jwk(key)
        self.kid = current["kid"]
        self._jwks = {"keys": [current] + ([_public_jwk(previous)] if previous is not None else [])}

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        previous: rsa.RSAPrivateKey | None = None
        if settings.jwt_private_key is not None:
            key = _load_pem(settings.jwt_private_key.get_secret_value(), "JWT_PRIVATE_KEY")
            if settings.jwt_previous_private_key is not None:
                previous = _load_pem(settings.jwt_previous_private_key.get_secret_value(),
                                     "JWT_PREVIOUS_PRIVATE_KEY")
        elif settings.is_development:
            key = _load_or_create_dev_key(settings.jwt_key_file)
            previous_file = settings.jwt_key_file.with_suffix(".previous.pem")
            if previous_file.exists():
                previous = _load_pem(previous_file.read_text(), str(previous_file))
        else:
            raise ConfigurationError(f"JWT_PRIVATE_KEY must be set when ENVIRONMENT={settings.environment}")
        return cls(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                   ttl_s=settings.access_token_ttl_s, previous=previous)

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    def access_token(self, user_id: str, email: str, *, session_id: str | None = None,
                     api_key_id: str | None = None, ttl_s: int | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self._issuer, "aud": self._audience, "sub": user_id, "email": email,
                                  "iat": now, "nbf": now, "exp": now + (ttl_s or self.ttl_s), "typ": "access",
                                  "jti": secrets.token_urlsafe(12)}
        if session_id:
            claims["sid"] = session_id
        if api_key_id:
            claims["akid"] = api_key_id
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})


def rotate_dev_key(key_file: Path) -> None:
    """Development: the current key becomes the previous one (still in the JWKS), a new one signs."""
    if key_file.exists():
        key_file.replace(key_file.with_suffix(".previous.pem"))
    _load_or_create_dev_key(key_file)


if __name__ == "__main__":
    import sys

    rotate_dev_key(Path(sys.argv[1]) if len(sys.argv) > 1 else Settings().jwt_key_file)
    print("rotated: restart auth to sign with the new key; the previous key stays in the JWKS")
