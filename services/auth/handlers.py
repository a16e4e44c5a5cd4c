"""What happens for each auth command. Plain functions of (command, deps)."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from services.auth import audit_log
from services.auth.api_key_store import PREFIX_CHARS, ApiKey, new_key
from services.auth.audit_log import BadCursor
from services.auth.deps import Deps
from services.auth.models import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    ClientInfo,
    Credentials,
    PasswordChange,
    Registration,
    StoredUser,
)
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
from shared.contracts.auth_events import ApiKeyRevoked, SecurityAlert, SessionRevoked, UserCreated, UserDeleted
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
    new_token, new_hash = make_refresh_token(session_id)
    try:
        # The secret first: a session id alone (it is in every access token) counts nothing and changes nothing.
        await deps.sessions.verify(session_id, old_hash)
        per_session, session_window = deps.settings.refresh_limit_per_session
        await deps.limiter.hit(f"refresh:session:{session_id}", per_session, session_window)
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
    """Ends the session the refresh token names, when its secret is right (a wrong one is 401 and changes
    nothing), else the bearer token's own session. Logging out twice is fine."""
    session: Session | None = None
    if refresh_token:
        session_id, secret_hash = parse_refresh_token(refresh_token)
        try:
            session = await deps.sessions.verify(session_id, secret_hash)
        except RefreshReuse as reuse:
            await revoke_session(deps, reuse.session, "refresh_token_reuse")
            raise SessionInvalid("This session was ended for your safety. Sign in again.",
                                 "session_revoked") from None
    elif principal is not None and principal.session_id is not None:
        found = await deps.sessions.get(principal.session_id)
        session = found[0] if found else None
    if session is not None and (principal is None or session.user_id == principal.user_id):
        await revoke_session(deps, session, "logout")


async def session_is_revoked(principal: Principal, deps: Deps) -> bool:
    """auth's own check when it verifies a token: the session must still be live."""
    if principal.session_id is None:
        return False
    found = await deps.sessions.get(principal.session_id)
    return found is None or found[0].revoked_at is not None


# ---- passwords ---------------------------------------------------------------------------------------------

def check_password_rules(password: str, param: str = "password") -> None:
    """A new password. Over bcrypt's 72 bytes it is refused, not pre-hashed: a clear answer now, one hash
    format for every account, and nothing silently cut off."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidRequest(f"Password must be at least {MIN_PASSWORD_CHARS} characters.",
                             param=param, code="password_too_short")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidRequest(f"Password must be at most {MAX_PASSWORD_BYTES} bytes (UTF-8).",
                             param=param, code="password_too_long")


async def register(cmd: Registration, client: ClientInfo, deps: Deps) -> SessionGrant:
    limit, window = deps.settings.register_limit_per_ip
    await deps.limiter.hit(f"register:ip:{client.ip}", limit, window)
    check_password_rules(cmd.password)
    user = StoredUser(id=f"user-{uuid.uuid4().hex[:24]}", email=cmd.email, name=cmd.name,
                      created_at=now(), providers=["password"],
                      password_hash=await hash_password(cmd.password, deps.bcrypt_rounds))
    try:
        await deps.users.create(user)
    except EmailTaken as exc:
        raise Conflict("An account with this email already exists.", param="email", code="email_taken") from exc
    await announce_user_created(deps, user, "password", client)
    return await start_session(deps, user, "password")


async def announce_user_created(deps: Deps, user: StoredUser, provider: str, client: ClientInfo) -> None:
    await deps.audit.record(user.id, audit_log.ACCOUNT_CREATED, client, {"provider": provider})
    await deps.audit.is_new_address(user.id, client.ip)  # known from now on: signing in from here is not news
    await deps.events.publish(new_event(UserCreated(user_id=user.id, email=user.email, provider=provider),
                                        user_id=user.id))


async def login(cmd: Credentials, client: ClientInfo, deps: Deps) -> SessionGrant:
    ip_limit, ip_window = deps.settings.login_limit_per_ip
    await deps.limiter.hit(f"login:ip:{client.ip}", ip_limit, ip_window)
    # Counted before the check, per email whether or not an account has it (a refusal says nothing about
    # existence), and per address (a guesser elsewhere cannot lock the owner out).
    await deps.throttle.admit(cmd.email, client.ip)
    user = await deps.users.by_email(cmd.email)
    if not await check_password(cmd.password, user.password_hash if user else None, deps.bcrypt_rounds):
        if user is not None:
            await sign_in_failed(deps, user, client)
        raise Unauthorized("Incorrect email or password.", code="invalid_credentials", headers={})
    assert user is not None and user.password_hash is not None
    await deps.throttle.succeeded(cmd.email, client.ip)
    if rounds_of(user.password_hash) < deps.bcrypt_rounds:  # upgrade a weaker hash while we hold the password
        await deps.users.set_password_hash(user.id, await hash_password(cmd.password, deps.bcrypt_rounds))
    await signed_in(deps, user, client, "password")
    return await start_session(deps, user, "password")


async def signed_in(deps: Deps, user: StoredUser, client: ClientInfo, provider: str) -> None:
    await deps.audit.record(user.id, audit_log.SIGN_IN_SUCCEEDED, client, {"provider": provider})
    if await deps.audit.is_new_address(user.id, client.ip):
        await deps.audit.record(user.id, audit_log.SIGN_IN_NEW_ADDRESS, client, {"provider": provider})


async def sign_in_failed(deps: Deps, user: StoredUser, client: ClientInfo) -> None:
    """A wrong password for an existing account: in its audit log, and at the threshold (once per window,
    from any addresses) an alert for people on the security topic."""
    await deps.audit.record(user.id, audit_log.SIGN_IN_FAILED, client, {"provider": "password"})
    threshold, window = deps.settings.security_alert_failures
    if await deps.throttle.count_failure(user.id, window) == threshold:
        log.warning("repeated failed sign-ins: security alert", extra={"user_id": user.id, "count": threshold})
        await deps.alerts.publish(new_event(SecurityAlert(
            kind="repeated_sign_in_failures", user_id=user.id, email=user.email, count=threshold,
            window_s=window, ip_address=client.ip), user_id=user.id))


async def _confirm_password(deps: Deps, user: StoredUser, password: str | None, client: ClientInfo,
                            param: str, message: str) -> None:
    """A person acting on their account proves it with the password, throttled like a sign-in."""
    assert user.password_hash is not None
    await deps.throttle.admit(user.email, client.ip)
    if not password or not await check_password(password, user.password_hash, deps.bcrypt_rounds):
        await sign_in_failed(deps, user, client)
        raise Unauthorized(message, param=param, code="invalid_credentials", headers={})
    await deps.throttle.succeeded(user.email, client.ip)


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


async def change_password(principal: Principal, cmd: PasswordChange, client: ClientInfo, deps: Deps) -> None:
    """The new password replaces the old; every other session of the account ends."""
    user = await deps.users.get(principal.user_id)
    if user is None:
        raise NotFound("User not found.")
    if user.password_hash is None:
        raise InvalidRequest("This account signs in with Google: it has no password to change.",
                             param="current_password", code="password_not_set")
    check_password_rules(cmd.new_password, param="new_password")
    await _confirm_password(deps, user, cmd.current_password, client, "current_password",
                            "The current password is not right.")
    await deps.users.set_password_hash(user.id, await hash_password(cmd.new_password, deps.bcrypt_rounds))
    for session in await deps.sessions.for_user(user.id):
        if session.session_id != principal.session_id and session.revoked_at is None:
            await revoke_session(deps, session, "password_changed")
    await deps.audit.record(user.id, audit_log.PASSWORD_CHANGED, client)


async def delete_account(principal: Principal, password: str | None, client: ClientInfo, deps: Deps) -> None:
    user = await deps.users.get(principal.user_id)
    if user is None:
        raise NotFound("User not found.")
    if user.password_hash is not None:  # a stolen access token alone cannot delete a password account
        await _confirm_password(deps, user, password, client, "password",
                                "Confirm with your password to delete the account.")
    await deps.users.delete(user)
    at = now()
    for session in await deps.sessions.for_user(user.id):
        await deps.sessions.revoke(session.session_id, "account_deleted", at)
    for key in await deps.api_keys.for_user(user.id):
        await deps.api_keys.revoke(key.key_id, user.id, at)
    # Files and training remove what they hold of this user; gateways drop its keys and sessions.
    await deps.events.publish(new_event(UserDeleted(user_id=user.id, until=at + deps.signer.ttl_s),
                                        user_id=user.id))
    # Its audit log goes with it; the deletion itself stays in the service's log (and in user.deleted).
    log.warning("account deleted", extra={"user_id": user.id, "client_ip": client.ip,
                                          "user_agent": client.user_agent})
    await deps.audit.delete_user(user.id)


# ---- API keys ---------------------------------------------------------------------------------------------

async def create_api_key(principal: Principal, name: str, client: ClientInfo, deps: Deps) -> dict[str, Any]:
    key, key_id, key_hash = new_key()
    record = ApiKey(key_id=key_id, user_id=principal.user_id, name=name, prefix=key[:PREFIX_CHARS],
                    created_at=now())
    await deps.api_keys.create(record, key_hash)
    await deps.audit.record(principal.user_id, audit_log.API_KEY_CREATED, client,
                            {"key_id": key_id, "name": name, "prefix": record.prefix})
    return {**record.public(), "key": key}  # the only time the key is shown


async def list_api_keys(principal: Principal, deps: Deps) -> list[dict[str, Any]]:
    return [k.public() for k in await deps.api_keys.for_user(principal.user_id) if k.revoked_at is None]


async def revoke_api_key(principal: Principal, key_id: str, client: ClientInfo, deps: Deps) -> None:
    if not await deps.api_keys.revoke(key_id, principal.user_id, now()):
        raise NotFound(f"No API key {key_id!r}.", param="id")
    await deps.audit.record(principal.user_id, audit_log.API_KEY_REVOKED, client, {"key_id": key_id})
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


# ---- the audit log ----------------------------------------------------------------------------------------

async def list_audit(principal: Principal, limit: int, after: str | None, deps: Deps) -> dict[str, Any]:
    """The caller's security events, newest first, as an OpenAI-style list page."""
    try:
        entries, has_more = await deps.audit.page(principal.user_id, limit, after)
    except BadCursor:
        raise InvalidRequest("`after` must be the id of an audit event.", param="after",
                             code="invalid_cursor") from None
    data = [e.public() for e in entries]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}
