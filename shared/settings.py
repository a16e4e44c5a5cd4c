"""The settings base every service's `Settings` extends (pydantic-settings; environment and `.env`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values copied from the setup guide or an example file instead of a real secret.
_PLACEHOLDER = re.compile(
    r"^(|change-?me.*|your[-_].*|.*[-_]here|placeholder.*|dev[-_].*|test(ing)?|secret|password|xxx+|\.\.\.)$",
    re.IGNORECASE,
)


def is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value.strip()))


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "staging", "production"] = "development"
    debug: bool = False
    log_level: str = "INFO"

    aws_default_region: str = "us-east-1"
    # botocore: explicit timeouts and retry mode, never the library defaults (60 s reads, legacy retries).
    aws_connect_timeout_s: float = 3.0
    aws_read_timeout_s: float = 25.0  # above SQS long polling's 20 s
    aws_max_attempts: int = 4
    aws_retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    # How long a received message stays hidden from other workers (kept so while its handler runs): also how soon
    # a message whose worker died mid-way is handled again.
    worker_visibility_timeout_s: int = 60

    # Where every service fetches auth's public keys to verify access tokens itself.
    auth_jwks_url: str = "http://127.0.0.1:5001/.well-known/jwks.json"
    jwt_issuer: str = "llm-tuner-auth"
    jwt_audience: str = "llm-tuner"

    # The credential services show each other on `/internal` routes (shared/service_token.py); every process
    # of a deployment has the same one. Unset, `/internal` answers nobody; outside development an HTTP
    # service refuses to start without it.
    service_token: SecretStr | None = None
    # Request bodies above this are refused with 413 before they are held (shared/body_limit.py); the routes
    # that take more (uploads, chat) are named in `route_body_limits`.
    max_request_body_bytes: int = Field(1024 * 1024, ge=1024)

    @property
    def is_development(self) -> bool:
        return self.environment in ("development", "test")

    def route_body_limits(self) -> dict[tuple[str, str], int]:
        """(method, route path) -> the most bytes that route's body may hold, where it is not
        `max_request_body_bytes`. A `{name}` in the path stands for one segment."""
        return {}

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        """Outside development a secret must be set, and must not be the example value from a guide."""
        if self.is_development:
            return self
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if field.annotation in (SecretStr, SecretStr | None) or isinstance(value, SecretStr):
                if value is None and field.is_required():
                    raise ValueError(f"{name.upper()} must be set when ENVIRONMENT={self.environment}")
                if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value()):
                    raise ValueError(
                        f"{name.upper()} holds a placeholder; set a real secret for ENVIRONMENT={self.environment}"
                    )
        return self
