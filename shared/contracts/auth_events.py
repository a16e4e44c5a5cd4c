"""Events the auth service publishes, to its topic `llm-tuner-auth-events`.

Consumers: files and training (`user.deleted`: remove the user's data), and every gateway replica on a queue of
its own (`apikey.revoked`, `session.revoked`, `user.deleted`: stop honouring the tokens at once).

`auth.security.alert` goes to a topic of its own, `llm-tuner-security-alerts`, for people to subscribe to.
"""

from __future__ import annotations

from shared.contracts.event import Event

USER_CREATED = "user.created"
USER_DELETED = "user.deleted"
SESSION_REVOKED = "session.revoked"
APIKEY_REVOKED = "apikey.revoked"
SECURITY_ALERT = "auth.security.alert"


class UserCreated(Event):
    TYPE = USER_CREATED
    user_id: str
    email: str
    provider: str  # "password" or "google"


class UserDeleted(Event):
    """The account is gone; its tokens must be refused until `until` (epoch s: when the last one expires)."""

    TYPE = USER_DELETED
    user_id: str
    until: int


class SessionRevoked(Event):
    """The session's access tokens must be refused until `until` (epoch s)."""

    TYPE = SESSION_REVOKED
    session_id: str
    user_id: str
    until: int
    reason: str | None = None


class ApiKeyRevoked(Event):
    TYPE = APIKEY_REVOKED
    key_id: str
    user_id: str


class SecurityAlert(Event):
    """Something about an account a person should look at: `kind` says what (`repeated_sign_in_failures`:
    `count` failed sign-ins within `window_s`, the last from `ip_address`). Published once per window."""

    TYPE = SECURITY_ALERT
    kind: str
    user_id: str
    email: str
    count: int
    window_s: int
    ip_address: str
