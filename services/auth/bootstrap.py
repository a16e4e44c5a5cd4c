"""Builds the auth service's dependencies once."""

from __future__ import annotations

from typing import Any

from services.auth import handlers
from services.auth.api_key_store import ApiKeysStore
from services.auth.audit_log import AuditStore
from services.auth.deps import Deps
from services.auth.login_throttle import LoginThrottle
from services.auth.oauth_states import OAuthStatesStore
from services.auth.passwords import warm_up
from services.auth.sessions import SessionsStore
from services.auth.settings import Settings
from services.auth.signing_keys import Signer
from services.auth.user_store import UsersStore
from shared.aws import AwsClients
from shared.envelope import Publisher
from shared.ratelimit import RateLimiter
from shared.tokens import JWKSVerifier, Principal


async def build_deps(aws: AwsClients, settings: Settings) -> Deps:
    warm_up(settings.bcrypt_rounds)
    db = await aws.get("dynamodb")
    sns = await aws.get("sns")
    throttle = LoginThrottle(db, settings.rate_limits_table, free=settings.login_free_failures,
                             first_s=settings.login_backoff_first_s,
                             cap_s=settings.login_backoff_cap_s, memory_s=settings.login_failure_memory_s)
    return Deps(users=UsersStore(db, settings.users_table), sessions=SessionsStore(db, settings.sessions_table),
                api_keys=ApiKeysStore(db, settings.api_keys_table),
                limiter=RateLimiter(db, settings.rate_limits_table), signer=Signer.from_settings(settings),
                events=Publisher(sns, await aws.topic_arn(settings.events_topic)),
                settings=settings, oauth_states=OAuthStatesStore(db, settings.oauth_states_table),
                throttle=throttle, audit=AuditStore(db, settings.audit_table, settings.audit_retention_days),
                alerts=Publisher(sns, await aws.topic_arn(settings.security_topic)))


def own_key_verifier(settings: Settings, deps: Deps) -> JWKSVerifier:
    """auth verifies its own tokens with the key it holds, and checks the session is still live."""

    async def own_jwks() -> dict[str, Any]:
        return deps.signer.jwks()

    async def revoked(principal: Principal) -> bool:
        return await handlers.session_is_revoked(principal, deps)

    return JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                        fetch=own_jwks, revoked=revoked)
