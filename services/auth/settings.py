from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from deploy import resources
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    users_table: str = Field(resources.USERS_TABLE, alias="DYNAMODB_USERS_TABLE")
    events_topic: str = Field(resources.AUTH_TOPIC, alias="AUTH_EVENTS_TOPIC")
    bcrypt_rounds: int = Field(12, ge=4, le=16)
    access_token_ttl_s: int = 15 * 60
    # Production: the PEM of the RSA signing key, from the secret store. Development: a key is generated
    # on first start and kept in `jwt_key_file` (git-ignored), so tokens survive a restart.
    jwt_private_key: SecretStr | None = None
    jwt_key_file: Path = Path(".data/auth/jwt-signing-key.pem")

    model_config = ServiceSettings.model_config | {"populate_by_name": True}
