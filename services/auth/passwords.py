"""bcrypt through the maintained `bcrypt` package; hashing runs off the event loop.

bcrypt reads at most 72 bytes (the package refuses more). Registration and password changes refuse longer
passwords with a clear 400 (models.MAX_PASSWORD_BYTES) rather than pre-hashing them: no stored hash could ever
match one, so at a check a longer password is simply wrong, at the cost of a check like any other."""

from __future__ import annotations

import asyncio
import functools

import bcrypt

from services.auth.models import MAX_PASSWORD_BYTES


@functools.lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> bytes:
    return bcrypt.hashpw(b"not-a-real-password", bcrypt.gensalt(rounds))


async def hash_password(password: str, rounds: int) -> str:
    digest = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(rounds))
    return digest.decode()


async def check_password(password: str, password_hash: str | None, rounds: int) -> bool:
    """Always spends one bcrypt check, so an unknown email costs what a wrong password costs."""
    secret = password.encode()
    if len(secret) > MAX_PASSWORD_BYTES:  # never set (registration refuses it): wrong, after the usual cost
        await asyncio.to_thread(bcrypt.checkpw, b"x", _dummy_hash(rounds))
        return False
    target = password_hash.encode() if password_hash else _dummy_hash(rounds)
    ok = await asyncio.to_thread(bcrypt.checkpw, secret, target)
    return ok and password_hash is not None


def rounds_of(password_hash: str) -> int:
    return int(password_hash.split("$")[2])


def warm_up(rounds: int) -> None:
    """Compute the dummy hash at start, so the first unknown-email login costs what the others do."""
    _dummy_hash(rounds)
