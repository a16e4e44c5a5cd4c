"""What happens for each auth command. Plain functions of (command, deps)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from services.auth.keys import Signer
from services.auth.models import MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, Credentials, Registration, StoredUser
from services.auth.passwords import check_password, hash_password, rounds_of
from services.auth.store import EmailTaken, UsersStore
from shared.errors import Conflict, InvalidRequest, Unauthorized
from shared.events import Envelope, new_event


class EventPublisher(Protocol):
    async def publish(self, envelope: Envelope) -> None: ...


@dataclass
class Deps:
    users: UsersStore
    signer: Signer
    events: EventPublisher
    bcrypt_rounds: int


def _session(deps: Deps, user: StoredUser) -> dict[str, Any]:
    return {"access_token": deps.signer.access_token(user.id, user.email), "token_type": "bearer",
            "expires_in": deps.signer.ttl_s, "user": user.public()}


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidRequest(f"Password must be at least {MIN_PASSWORD_CHARS} characters.",
                             param="password", code="password_too_short")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidRequest(f"Password must be at most {MAX_PASSWORD_BYTES} bytes.",
                             param="password", code="password_too_long")


async def register(cmd: Registration, deps: Deps) -> dict[str, Any]:
    check_password_rules(cmd.password)
    user = StoredUser(id=f"user-{uuid.uuid4().hex[:24]}", email=cmd.email, name=cmd.name,
                      created_at=int(time.time()), providers=["password"],
                      password_hash=await hash_password(cmd.password, deps.bcrypt_rounds))
    try:
        await deps.users.create(user)
    except EmailTaken as exc:
        raise Conflict("An account with this email already exists.", param="email", code="email_taken") from exc
    await deps.events.publish(new_event("user.registered", {"user_id": user.id, "email": user.email,
                                                            "provider": "password"}, user_id=user.id))
    return _session(deps, user)


async def login(cmd: Credentials, deps: Deps) -> dict[str, Any]:
    user = await deps.users.by_email(cmd.email)
    if not await check_password(cmd.password, user.password_hash if user else None, deps.bcrypt_rounds):
        raise Unauthorized("Incorrect email or password.", code="invalid_credentials", headers={})
    assert user is not None and user.password_hash is not None
    if rounds_of(user.password_hash) < deps.bcrypt_rounds:  # upgrade a weaker hash while we hold the password
        await deps.users.set_password_hash(user.id, await hash_password(cmd.password, deps.bcrypt_rounds))
    return _session(deps, user)
