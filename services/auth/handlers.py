"""What happens for each auth command. Plain functions of (command, deps)."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from services.auth.api_key_store import PREFIX_CHARS, ApiKey, new_key
from services.auth.deps import Deps
from services.auth.models import MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, Credentials, Registration, StoredUser
from services.auth.passwords import check_password, hash_password, rounds_of
from services.auth.sessions import (
    RefreshReuse,
    Session,
    SessionInvalid,
    make_refresh_token,
    new_session_id,
    now,
    parse_refresh_token,
)
from services.auth.user_store import EmailTaken
from shared.contracts.auth_events import ApiKeyRevoked, SessionRevoked, UserCreated, UserDeleted
from shared.envelope import new_event
from shared.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from shared.tokens import Principal

log = logging.getLogger(__name__)


@dataclass
class SessionGrant:
    """A new session: the JSON body for the client, and what goes into cookies."""

    body: dict[str, Any]
    refresh_token: str
    csrf_token: str
    max_age_s: int


# ---- sessions ---------------------------------------------------------------------------------------------

async def start_session(deps: Deps, user: StoredUser, provider: str) -> SessionGrant:
    at = now()
    session = Session(session_id=new_session_id(), user_id=user.id, provider=provider, created_at=at,
                      last_used_at=at, absolute_expires_at=at + deps.settings.session_absolute_timeout_s)
    token, token_hash = make_refresh_token(session.session_id)
    await deps.sessions.create(session, token_hash, ttl_s=deps.settings.session_idle_timeout_s)
    return _grant(deps, user, session, token)


def _grant(deps: Deps, user: StoredUser, session: Session, refresh_token: str) -> SessionGrant:
    access = deps.signer.access_token(user.id, user.email, session_id=session.session_id)
    body = {"access_token": access, "token_type": "bearer", "expires_in": deps.signer.ttl_s,
            "user": user.public(), "session": {"id": session.session_id,
                                               "expires_at": session.absolute_expires_at}}
    return SessionGrant(body=body, refresh_token=refresh_token, csrf_token=secrets.token_urlsafe(24),
                        max_age_s=max(0, session.absolute_expires_at - now()))


async def refresh(refresh_token: str | None, client_ip: str, deps: Deps) -> SessionGrant:
    limit, window = deps.settings.refresh_limit_per_ip
    await deps.limiter.hit(f"refresh:ip:{client_ip}", limit, window)
    if not refresh_token:
        raise SessionInvalid("No session to refresh. Sign in again.", "session_missing")
    session_id, old_hash = parse_refresh_token(refresh_token)
    per_session, session_window = deps.settings.refresh_limit_per_session
    await deps.limiter.hit(f"refresh:session:{session_id}", per_session, session_window)
    new_token, new_hash = make_refresh_token(session_id)
    try:
        session = await deps.sessions.rotate(session_id, old_hash, new_hash, now=now(),
                                             idle_s=deps.settings.session_idle_timeout_s)
    except RefreshReuse as reuse:
        log.warning("refresh token reused; session family revoked", extra={"session_id": session_id,
                                                                             "user_id": reuse.session.user_id})
        await revoke_session(deps, reuse.session, "refresh_token_reuse")
        raise SessionInvalid("This session was ended for your safety. Sign in again.", "session_revoked") from None
    user = await deps.users.get(session.user_id)
    if user is None:
        raise SessionInvalid()
    return _grant(deps, user, session, new_token)


async def revoke_session(deps: Deps, session: Session, reason: str) -> None:
    if await deps.sessions.revoke(session.session_id, reason, now()):
        # Access tokens of this session may live `ttl` longer: every gateway replica drops them now.
        await deps.events.publish(new_event(SessionRevoked(
            session_id=session.session_id, user_id=session.user_id, reason=reason,
            until=now() + deps.signer.ttl_s), user_id=session.user_id))


async def logout(refresh_token: str | None, principal: Principal | None, deps: Deps) -> None:
    session_id = None
    if refresh_token:
        try:
            session_id, _ = parse_refresh_token(refresh_token)
        except SessionInvalid:
            session_id = None
    if session_id is None and principal is not None:
        session_id = principal.session_id
    if session_id is None:
        return  # nothing to sign out of: logging out twice is fine
    found = await deps.sessions.get(session_id)
    if found is not None and (principal is None or found[0].user_id == principal.user_id):
        await revoke_session(deps, found[0], "logout")


async def session_is_revoked(principal: Principal, deps: Deps) -> bool:
    """auth's own check when it verifies a token: the session must still be live."""
    if principal.session_id is None:
        return False
    found = await deps.sessions.get(principal.session_id)
    return found is None or found[0].revoked_at is not None


# ---- passwords ---------------------------------------------------------------------------------------------

def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidRequest(f"Password must be at least {MIN_PASSWORD_CHARS} characters.",
                             param="password", code="password_too_short")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidRequest(f"Password must be at most {MAX_PASSWORD_BYTES} bytes.",
                             param="password", code="password_too_long")


async def register(cmd: Registration, client_ip: str, deps: Deps) -> SessionGrant:
    limit, window = deps.settings.register_limit_per_ip
    await deps.limiter.hit(f"register:ip:{client_ip}", limit, window)
    check_password_rules(cmd.password)
    user = StoredUser(id=f"user-{uuid.uuid4().hex[:24]}", email=cmd.email, name=cmd.name,
                      created_at=now(), providers=["password"],
                      password_hash=await hash_password(cmd.password, deps.bcrypt_rounds))
    try:
        await deps.users.create(user)
    except EmailTaken as exc:
        raise Conflict("An account with this email already exists.", param="email", code="email_taken") from exc
    await announce_user_created(deps, user, "password")
    return await start_session(deps, user, "password")


async def announce_user_created(deps: Deps, user: StoredUser, provider: str) -> None:
    await deps.events.publish(new_event(UserCreated(user_id=user.id, email=user.email, provider=provider),
                                        user_id=user.id))


async def login(cmd: Credentials, client_ip: str, deps: Deps) -> SessionGrant:
    ip_limit, ip_window = deps.settings.login_limit_per_ip
    await deps.limiter.hit(f"login:ip:{client_ip}", ip_limit, ip_window)
    # Counted per email whether or not an account has it, so a lock says nothing about existence.
    failures, failure_window = deps.settings.login_failures_per_account
    account_bucket = f"login:account:{cmd.email}"
    await deps.limiter.check(account_bucket, failures, failure_window)
    user = await deps.users.by_email(cmd.email)
    if not await check_password(cmd.password, user.password_hash if user else None, deps.bcrypt_rounds):
        await deps.limiter.count(account_bucket, failure_window)
        raise Unauthorized("Incorrect email or password.", code="invalid_credentials", headers={})
    assert user is not None and user.password_hash is not None
    if rounds_of(user.password_hash) < deps.bcrypt_rounds:  # upgrade a weaker hash while we hold the password
        await deps.users.set_password_hash(user.id, await hash_password(cmd.password, deps.bcrypt_rounds))
    return await start_session(deps, user, "password")


# ---- the account ------------------------------------------------------------------------------------------

async def secure_after_verified_link(deps: Deps, user: StoredUser) -> None:
    """Google vouched for this email; we never verified the password account's. Whoever registered it may
    not own the address (pre-account hijacking): so its password, sessions and API keys end here, and the
    owner signs in with Google from now on."""
    at = now()
    await deps.users.clear_password(user.id)
    for session in await deps.sessions.for_user(user.id):
        await revoke_session(deps, session, "verified_identity_linked")
    for key in await deps.api_keys.for_user(user.id):
        if await deps.api_keys.revoke(key.key_id, user.id, at):
            await deps.events.publish(new_event(ApiKeyRevoked(key_id=key.key_id, user_id=user.id),
                                                user_id=user.id))
    log.warning("verified Google identity linked to a password account: password, sessions and keys ended",
                extra={"user_id": user.id})


async def me(principal: Principal, deps: Deps) -> dict[str, Any]:
    user = await deps.users.get(principal.user_id)
    if user is None:
        raise NotFound("User not found.")
    return user.public()


async def delete_account(principal: Principal, password: str | None, deps: Deps) -> None:
    user = await deps.users.get(principal.user_id)
    if user is None:
        raise NotFound("User not found.")
    if user.password_hash is not None:  # a stolen access token alone cannot delete a password account
        if not password or not await check_password(password, user.password_hash, deps.bcrypt_rounds):
            raise Unauthorized("Confirm with your password to delete the account.", param="password",
                               code="invalid_credentials", headers={})
    await deps.users.delete(user)
    at = now()
    for session in await deps.sessions.for_user(user.id):
        await deps.sessions.revoke(session.session_id, "account_deleted", at)
    for key in await deps.api_keys.for_user(user.id):
        await deps.api_keys.revoke(key.key_id, user.id, at)
    # Files and training remove what they hold of this user; gateways drop its keys and sessions.
    await deps.events.publish(new_event(UserDeleted(user_id=user.id, until=at + deps.signer.ttl_s),
                                        user_id=user.id))


# ---- API keys ---------------------------------------------------------------------------------------------

async def create_api_key(principal: Principal, name: str, deps: Deps) -> dict[str, Any]:
    key, key_id, key_hash = new_key()
    record = ApiKey(key_id=key_id, user_id=principal.user_id, name=name, prefix=key[:PREFIX_CHARS],
                    created_at=now())
    await deps.api_keys.create(record, key_hash)
    return {**record.public(), "key": key}  # the only time the key is shown


async def list_api_keys(principal: Principal, deps: Deps) -> list[dict[str, Any]]:
    return [k.public() for k in await deps.api_keys.for_user(principal.user_id) if k.revoked_at is None]


async def revoke_api_key(principal: Principal, key_id: str, deps: Deps) -> None:
    if not await deps.api_keys.revoke(key_id, principal.user_id, now()):
        raise NotFound(f"No API key {key_id!r}.", param="id")
    await deps.events.publish(new_event(ApiKeyRevoked(key_id=key_id, user_id=principal.user_id),
                                        user_id=principal.user_id))


async def exchange_api_key(key: str, deps: Deps) -> dict[str, Any]:
    """The gateway trades a program's key for a short access token every service can verify itself."""
    record = await deps.api_keys.verify(key)
    user = await deps.users.get(record.user_id) if record else None
    if record is None or user is None:
        raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
    await deps.api_keys.touch(record.key_id, now())
    ttl = min(deps.signer.ttl_s, 300)
    return {"access_token": deps.signer.access_token(user.id, user.email, api_key_id=record.key_id, ttl_s=ttl),
            "expires_in": ttl, "user_id": user.id, "key_id": record.key_id}
