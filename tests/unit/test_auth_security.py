"""auth's security rules as pure functions: where our own page may run, the login backoff, long passwords."""

from __future__ import annotations

import pytest

from services.auth.cookies import accepted_origins
from services.auth.handlers import check_password_rules
from services.auth.login_throttle import backoff_s
from services.auth.passwords import check_password, hash_password
from services.auth.settings import Settings
from shared.errors import InvalidRequest


def test_in_development_a_loopback_base_url_stands_for_its_loopback_names_at_the_same_port() -> None:
    origins = accepted_origins(Settings(base_url="http://localhost:5000"))
    assert origins == {"http://localhost:5000", "http://127.0.0.1:5000", "http://[::1]:5000"}


def test_otherwise_only_the_base_urls_own_origin_is_ours() -> None:
    assert accepted_origins(Settings(base_url="https://tuner.example.com/")) == {"https://tuner.example.com"}
    production = Settings.model_construct(base_url="http://localhost:5000", environment="production")
    assert accepted_origins(production) == {"http://localhost:5000"}


def test_the_backoff_is_free_then_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, 3, 2, 20) for n in range(8)] == [0, 0, 0, 2, 4, 8, 16, 20]
    assert backoff_s(10_000, 3, 2, 900) == 900  # no overflow however long it goes on


async def test_a_password_over_72_bytes_is_simply_wrong_at_a_check() -> None:
    stored = await hash_password("x" * 72, 4)
    assert await check_password("x" * 72, stored, 4)
    assert not await check_password("x" * 73, stored, 4)  # bcrypt would have cut it to the same 72
    assert not await check_password("é" * 40, None, 4)


@pytest.mark.parametrize(("password", "code"), [("short", "password_too_short"), ("é" * 37, "password_too_long")])
def test_a_new_password_out_of_bounds_is_a_clear_400(password: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_password_rules(password, param="new_password")
    assert (refused.value.code, refused.value.param) == (code, "new_password")
