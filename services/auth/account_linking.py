"""Which account a verified Google identity signs in to: its own once linked; else the account with the email
Google vouches for, linked (and secured: see handlers.secure_after_verified_link); else a new account."""

from __future__ import annotations

import logging
import uuid

from services.auth import audit_log, handlers
from services.auth.deps import Deps
from services.auth.models import EMAIL, ClientInfo, StoredUser, normalise_email
from services.auth.oidc_client import GoogleIdentity, GoogleSignInFailed
from services.auth.sessions import now
from services.auth.user_store import EmailTaken, IdentityTaken

log = logging.getLogger(__name__)


async def sign_in_with_google(identity: GoogleIdentity, client: ClientInfo, deps: Deps) -> handlers.SessionGrant:
    user = await account_for(identity, client, deps)
    await handlers.signed_in(deps, user, client, "google")
    return await handlers.start_session(deps, user, "google")


async def account_for(identity: GoogleIdentity, client: ClientInfo, deps: Deps, retried: bool = False) -> StoredUser:
    """Known Google identity: its account. Otherwise the account with this email, linked, but only when
    Google vouches for the email; otherwise a new account."""
    user = await deps.users.by_google_subject(identity.subject)
    if user is not None:
        return user
    email = normalise_email(identity.email or "")
    if not identity.email_verified or not EMAIL.match(email):
        raise GoogleSignInFailed("google_email_unverified", "Google does not vouch for an email on this account")
    existing = await deps.users.by_email(email)
    try:
        if existing is not None:
            return await _link(existing, identity, client, deps)
        return await _create(email, identity, client, deps)
    except (IdentityTaken, EmailTaken) as exc:
        if retried:  # a concurrent sign-in of the same person: whatever it wrote is what we use
            raise GoogleSignInFailed("google_account_conflict", f"concurrent change: {exc!r}") from exc
        return await account_for(identity, client, deps, retried=True)


async def _link(user: StoredUser, identity: GoogleIdentity, client: ClientInfo, deps: Deps) -> StoredUser:
    if user.google_sub and user.google_sub != identity.subject:
        raise GoogleSignInFailed("google_account_conflict", "the account with this email is linked to another "
                                 "Google identity")
    await deps.users.link_google(user.id, identity.subject, identity.name)
    if user.password_hash is not None:
        await handlers.secure_after_verified_link(deps, user)
    await deps.audit.record(user.id, audit_log.GOOGLE_LINKED, client,
                            {"password_removed": "yes" if user.password_hash is not None else "no"})
    log.info("google identity linked", extra={"user_id": user.id})
    return await deps.users.get(user.id) or user


async def _create(email: str, identity: GoogleIdentity, client: ClientInfo, deps: Deps) -> StoredUser:
    user = StoredUser(id=f"user-{uuid.uuid4().hex[:24]}", email=email, name=identity.name, created_at=now(),
                      providers=["google"], google_sub=identity.subject)
    await deps.users.create(user)
    await handlers.announce_user_created(deps, user, "google", client)
    return user
