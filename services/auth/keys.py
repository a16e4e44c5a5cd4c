"""The access-token signing key (RSA, RS256) and the JWKS that publishes its public half."""

from __future__ import annotations

import base64
import hashlib
import json
import os
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


class Signer:
    def __init__(self, key: rsa.RSAPrivateKey, *, issuer: str, audience: str, ttl_s: int) -> None:
        self._key = key
        self._issuer = issuer
        self._audience = audience
        self.ttl_s = ttl_s
        public_jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        thumbprint = json.dumps({k: public_jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(thumbprint.encode()).digest()).rstrip(b"=").decode()
        self._jwks = {"keys": [{**public_jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        if settings.jwt_private_key is not None:
            loaded = serialization.load_pem_private_key(
                settings.jwt_private_key.get_secret_value().encode(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ConfigurationError("JWT_PRIVATE_KEY must be an RSA private key in PEM")
            key = loaded
        elif settings.is_development:
            key = _load_or_create_dev_key(settings.jwt_key_file)
        else:
            raise ConfigurationError(f"JWT_PRIVATE_KEY must be set when ENVIRONMENT={settings.environment}")
        return cls(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                   ttl_s=settings.access_token_ttl_s)

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    def access_token(self, user_id: str, email: str) -> str:
        now = int(time.time())
        claims = {"iss": self._issuer, "aud": self._audience, "sub": user_id, "email": email,
                  "iat": now, "nbf": now, "exp": now + self.ttl_s, "typ": "access"}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
