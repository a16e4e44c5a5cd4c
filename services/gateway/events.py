"""Events the gateway consumes. It publishes none.

Consumed (auth's topic `llm-tuner-auth-events`, on a queue of each replica's own, see shared/replica.py):
- `apikey.revoked`  {key_id, user_id}          -> drop the key's cached access tokens, deny tokens of the key;
- `session.revoked` {session_id, user_id, until} -> deny the session's access tokens until `until`;
- `user.deleted`    {user_id, until}            -> deny every token of the user until `until`, drop its keys.
At start a replica also asks auth for the sessions revoked within an access token's lifetime
(`GET /internal/revocations?since=`), since its queue only holds what happened after it was created.
"""

from __future__ import annotations

from pydantic import BaseModel

APIKEY_REVOKED = "apikey.revoked"
SESSION_REVOKED = "session.revoked"
USER_DELETED = "user.deleted"
CONSUMED = (APIKEY_REVOKED, SESSION_REVOKED, USER_DELETED)


class ApiKeyRevoked(BaseModel):
    key_id: str
    user_id: str


class SessionRevoked(BaseModel):
    session_id: str
    user_id: str
    until: int


class UserDeleted(BaseModel):
    user_id: str
    until: int
