"""Accounts for tests: sign a new user up over HTTP and build the bearer header of its session."""

from __future__ import annotations

import os
from typing import Any

import httpx

_counter = iter(range(1_000_000))


def register(auth_url: str, email: str | None = None, password: str = "correct horse battery") -> dict[str, Any]:
    email = email or f"user{next(_counter)}-{os.getpid()}@example.com"
    response = httpx.post(f"{auth_url}/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['access_token']}"}
