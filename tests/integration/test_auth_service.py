"""auth against the embedded AWS over HTTP: register, login, me, JWKS, and every bad input's envelope."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx
import jwt

from tests.support.accounts import bearer, register


def _assert_envelope(response: httpx.Response, status: int, param: str | None = None) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return dict(error)


def test_register_issues_a_verifiable_access_token(auth_url: str) -> None:
    email = f"Mixed.Case-{uuid.uuid4().hex[:6]}@Example.COM"
    session = register(auth_url, email=email)
    assert session["user"]["email"] == email.lower()
    jwks = httpx.get(f"{auth_url}/.well-known/jwks.json").json()
    key = jwt.PyJWK.from_dict(jwks["keys"][0])
    claims = jwt.decode(session["access_token"], key=key, algorithms=["RS256"], audience="llm-tuner")
    assert claims["sub"] == session["user"]["id"]
    assert claims["exp"] - claims["iat"] == 15 * 60


def test_me_answers_the_callers_profile(auth_url: str) -> None:
    session = register(auth_url)
    me = httpx.get(f"{auth_url}/auth/me", headers=bearer(session))
    assert me.status_code == 200
    assert me.json()["id"] == session["user"]["id"]
    assert "password_hash" not in me.json()


def test_login_accepts_the_right_password_only(auth_url: str) -> None:
    email = f"login-{uuid.uuid4().hex[:8]}@example.com"
    register(auth_url, email=email, password="a good long password")
    ok = httpx.post(f"{auth_url}/auth/login", json={"email": email.upper(), "password": "a good long password"})
    assert ok.status_code == 200 and ok.json()["access_token"]
    wrong = httpx.post(f"{auth_url}/auth/login", json={"email": email, "password": "not the password"})
    unknown = httpx.post(f"{auth_url}/auth/login", json={"email": "nobody@example.com", "password": "whatever1"})
    # The same answer for a wrong password and an unknown email: no account enumeration.
    assert _assert_envelope(wrong, 401) == _assert_envelope(unknown, 401)


def test_duplicate_email_is_a_conflict_even_when_concurrent(auth_url: str) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"

    def attempt(_: int) -> int:
        return httpx.post(f"{auth_url}/auth/register", json={"email": email, "password": "password123"},
                          timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        statuses = sorted(pool.map(attempt, range(5)))
    assert statuses == [201, 409, 409, 409, 409]


def test_bad_inputs_get_the_error_envelope(auth_url: str) -> None:
    short = httpx.post(f"{auth_url}/auth/register", json={"email": "a@example.com", "password": "short"})
    assert _assert_envelope(short, 400, "password")["code"] == "password_too_short"
    long = httpx.post(f"{auth_url}/auth/register", json={"email": "b@example.com", "password": "é" * 40})
    assert _assert_envelope(long, 400, "password")["code"] == "password_too_long"
    bad_email = httpx.post(f"{auth_url}/auth/register", json={"email": "not-an-email", "password": "password123"})
    _assert_envelope(bad_email, 400, "email")
    malformed = httpx.post(f"{auth_url}/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    _assert_envelope(malformed, 400)
    _assert_envelope(httpx.get(f"{auth_url}/auth/me"), 401)
    _assert_envelope(httpx.get(f"{auth_url}/auth/me", headers={"Authorization": "Bearer nope"}), 401)
    _assert_envelope(httpx.get(f"{auth_url}/no/such/route"), 404)
