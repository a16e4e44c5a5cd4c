"""Builds the auth service's dependencies once."""

from __future__ import annotations

from typing import Any

from services.auth.handlers import Deps
from services.auth.keys import Signer
from services.auth.passwords import warm_up
from services.auth.settings import Settings
from services.auth.store import UsersStore
from shared.aws import AwsClients
from shared.events import Publisher
from shared.tokens import JWKSVerifier


async def build_deps(aws: AwsClients, settings: Settings) -> Deps:
    warm_up(settings.bcrypt_rounds)
    return Deps(users=UsersStore(await aws.get("dynamodb"), settings.users_table),
                signer=Signer.from_settings(settings),
                events=Publisher(await aws.get("sns"), await aws.topic_arn(settings.events_topic)),
                bcrypt_rounds=settings.bcrypt_rounds)


def own_key_verifier(settings: Settings, deps: Deps) -> JWKSVerifier:
    """auth verifies its own tokens with the key it holds, not over HTTP to itself."""

    async def own_jwks() -> dict[str, Any]:
        return deps.signer.jwks()

    return JWKSVerifier(settings.auth_jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
                        fetch=own_jwks)
