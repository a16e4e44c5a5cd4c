"""Password hashing: bcrypt at 12 rounds by default, and the same work for an unknown email."""

from __future__ import annotations

import asyncio
from typing import Any

import bcrypt
import pytest

from services.auth import passwords
from services.auth.settings import Settings


def test_default_cost_is_12_rounds() -> None:
    assert Settings().bcrypt_rounds == 12
    digest = asyncio.run(passwords.hash_password("correct horse", 12))
    assert passwords.rounds_of(digest) == 12 and digest.startswith("$2b$12$")


def test_an_unknown_email_costs_one_bcrypt_check_like_a_wrong_password(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> Any:
        calls.append(passwords.rounds_of(hashed.decode()))
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", counting)
    stored = asyncio.run(passwords.hash_password("the real one", 4))
    assert asyncio.run(passwords.check_password("a wrong one", stored, 4)) is False
    assert asyncio.run(passwords.check_password("a wrong one", None, 4)) is False
    assert asyncio.run(passwords.check_password("the real one", stored, 4)) is True
    assert calls == [4, 4, 4]  # the unknown email was checked against a dummy hash of the same cost


def test_production_settings_refuse_missing_or_placeholder_secrets() -> None:
    from pydantic import SecretStr, ValidationError

    with pytest.raises(ValidationError, match="GOOGLE_CLIENT_SECRET"):
        Settings(environment="production", google_client_id="123.apps.googleusercontent.com",
                 jwt_private_key=SecretStr("-----BEGIN PRIVATE KEY-----real"))
    with pytest.raises(ValidationError, match="GOOGLE_CLIENT_SECRET"):
        Settings(environment="production", google_client_id="123.apps.googleusercontent.com",
                 google_client_secret=SecretStr("your-google-client-secret"))
