"""Token verification's security cases, with a real signer and the shared verifier (no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.auth.signing_keys import Signer
from shared.errors import Unauthorized
from shared.tokens import JWKSVerifier, Principal

ISS, AUD = "llm-tuner-auth", "llm-tuner"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY, OLD_KEY, OTHER_KEY = _key(), _key(), _key()


def _signer(key: rsa.RSAPrivateKey = KEY, previous: rsa.RSAPrivateKey | None = None) -> Signer:
    return Signer(key, issuer=ISS, audience=AUD, ttl_s=900, previous=previous)


def _verifier(signer: Signer, revoked: Any = None) -> JWKSVerifier:
    async def fetch() -> dict[str, Any]:
        return signer.jwks()

    return JWKSVerifier("unused", issuer=ISS, audience=AUD, fetch=fetch, revoked=revoked)


def verify(token: str, signer: Signer | None = None, revoked: Any = None) -> Principal:
    return asyncio.run(_verifier(signer or _signer(), revoked).verify(token))


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now, "exp": now + 600, "typ": "access", **overrides}


def test_a_good_token_carries_user_session_and_kid() -> None:
    signer = _signer()
    token = signer.access_token("user-1", "a@example.com", session_id="ses_x")
    assert jwt.get_unverified_header(token)["kid"] == signer.kid
    principal = verify(token, signer)
    assert (principal.user_id, principal.session_id) == ("user-1", "ses_x")


def test_alg_none_is_refused() -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': _signer().kid})}.{_b64(_claims())}."
    with pytest.raises(Unauthorized):
        verify(token)


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    public_pem = KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": _signer().kid}
    import hashlib
    import hmac
    signing_input = f"{_b64(header)}.{_b64(_claims())}"
    signature = base64.urlsafe_b64encode(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())
    with pytest.raises(Unauthorized):
        verify(f"{signing_input}.{signature.rstrip(b'=').decode()}")


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = _signer().access_token("user-1", "a@example.com").split(".")
    forged = _b64(_claims(sub="user-admin"))
    with pytest.raises(Unauthorized):
        verify(f"{header}.{forged}.{signature}")


@pytest.mark.parametrize(("claims", "code"), [
    ({"exp": int(time.time()) - 10}, "token_expired"),
    ({"iss": "someone-else"}, "invalid_api_key"),
    ({"aud": "another-app"}, "invalid_api_key"),
    ({"typ": "refresh"}, "invalid_api_key"),
])
def test_expired_wrong_issuer_audience_or_type_are_refused(claims: dict[str, Any], code: str) -> None:
    signer = _signer()
    token = jwt.encode(_claims(**claims), KEY, algorithm="RS256", headers={"kid": signer.kid})
    with pytest.raises(Unauthorized) as refused:
        verify(token, signer)
    assert refused.value.code == code


def test_an_unknown_kid_is_refused() -> None:
    stranger = _signer(OTHER_KEY)
    with pytest.raises(Unauthorized):
        verify(stranger.access_token("user-1", "a@example.com"), _signer())


def test_a_revoked_session_is_refused() -> None:
    signer = _signer()
    token = signer.access_token("user-1", "a@example.com", session_id="ses_gone")

    async def revoked(principal: Principal) -> bool:
        return principal.session_id == "ses_gone"

    with pytest.raises(Unauthorized) as refused:
        verify(token, signer, revoked)
    assert refused.value.code == "token_revoked"


def test_during_a_rotation_tokens_of_the_previous_key_still_verify() -> None:
    before = _signer(OLD_KEY)
    old_token = before.access_token("user-1", "a@example.com")
    after = _signer(KEY, previous=OLD_KEY)
    assert len(after.jwks()["keys"]) == 2
    assert verify(old_token, after).user_id == "user-1"
    assert verify(after.access_token("user-2", "b@example.com"), after).user_id == "user-2"
    assert jwt.get_unverified_header(after.access_token("u", "e"))["kid"] != before.kid
