from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.contracts import resources
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    users_table: str = Field(resources.USERS_TABLE, alias="DYNAMODB_USERS_TABLE")
    sessions_table: str = Field(resources.SESSIONS_TABLE, alias="DYNAMODB_SESSIONS_TABLE")
    api_keys_table: str = Field(resources.API_KEYS_TABLE, alias="DYNAMODB_API_KEYS_TABLE")
    rate_limits_table: str = Field(resources.RATE_LIMITS_TABLE, alias="DYNAMODB_RATE_LIMITS_TABLE")
    oauth_states_table: str = Field(resources.OAUTH_STATES_TABLE, alias="DYNAMODB_OAUTH_STATES_TABLE")
    audit_table: str = Field(resources.AUDIT_TABLE, alias="DYNAMODB_AUDIT_TABLE")
    events_topic: str = Field(resources.AUTH_TOPIC, alias="AUTH_EVENTS_TOPIC")
    security_topic: str = Field(resources.SECURITY_TOPIC, alias="SECURITY_ALERTS_TOPIC")
    bcrypt_rounds: int = Field(12, ge=4, le=16)

    # Tokens. Production: the PEM of the RSA signing key from the secret store, and during a rotation the
    # previous key's PEM too (its public half stays in the JWKS until tokens it signed have expired).
    # Development: a key is generated on first start and kept in `jwt_key_file` (git-ignored).
    access_token_ttl_s: int = Field(15 * 60, ge=60, le=24 * 3600)
    jwt_private_key: SecretStr | None = None
    jwt_previous_private_key: SecretStr | None = None
    jwt_key_file: Path = Path(".data/auth/jwt-signing-key.pem")

    # Sessions: a refresh token rotates on every use; a session ends when unused for `idle` or after
    # `absolute`, whichever comes first.
    session_idle_timeout_s: int = Field(7 * 24 * 3600, ge=60)
    session_absolute_timeout_s: int = Field(30 * 24 * 3600, ge=60)
    refresh_cookie: str = "llmt_refresh"
    csrf_cookie: str = "llmt_csrf"

    # The public address people reach us at (the Google callback is `{base_url}/auth/google/callback`, the
    # origin a popup posts to and the one state-changing requests must come from). Only this setting says it:
    # forwarded Host headers are never believed. X-Forwarded-For is, from a trusted proxy, for client addresses.
    base_url: str = "http://localhost:5000"
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(
        default_factory=lambda: [ip_network("127.0.0.0/8"), ip_network("::1/128")])

    # Rate limits: (attempts, window seconds), shared by every replica through DynamoDB.
    register_limit_per_ip: tuple[int, int] = (10, 600)
    login_limit_per_ip: tuple[int, int] = (30, 300)
    # Failed sign-ins are counted per (account, client address), before the password is checked. After
    # `login_free_failures` in a row, that pair waits 2, 4, 8... seconds (`login_backoff_first_s`, doubling, at
    # most `login_backoff_cap_s`) before each next check: nobody can lock an account for its owner elsewhere.
    # The count resets on success and after `login_failure_memory_s`.
    login_free_failures: int = Field(5, ge=1)
    login_backoff_first_s: int = Field(2, ge=1)
    login_backoff_cap_s: int = Field(900, ge=2)
    login_failure_memory_s: int = Field(24 * 3600, ge=60)
    # (failed sign-ins to one account from anywhere, window seconds): then an alert goes to the security topic.
    security_alert_failures: tuple[int, int] = (20, 3600)
    audit_retention_days: int = Field(400, ge=1)
    refresh_limit_per_ip: tuple[int, int] = (120, 60)
    refresh_limit_per_session: tuple[int, int] = (30, 60)  # the "account" of a refresh is its session
    google_limit_per_ip: tuple[int, int] = (30, 60)

    # Google sign-in: off unless a client id is set.
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"

    model_config = ServiceSettings.model_config | {"populate_by_name": True}

    @field_validator("base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _google_needs_its_secret(self) -> Settings:
        if self.google_client_id and self.google_client_secret is None and not self.is_development:
            raise ValueError("GOOGLE_CLIENT_SECRET must be set when GOOGLE_CLIENT_ID is")
        return self

    @property
    def cookie_secure(self) -> bool:
        return not self.is_development or self.base_url.startswith("https://")
