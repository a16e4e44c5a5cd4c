"""Sessions and their refresh tokens.

A session is a family of refresh tokens. Each use rotates the token (a conditional write on the current
token's hash); the old hash is kept, and presenting one again means the token was stolen or replayed:
the whole family is revoked (the last KEPT_HASHES are kept, so a long-lived session's item stays small).
Only hashes are stored. A session ends when unused for the idle timeout,
after the absolute timeout, at logout, or when its account goes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from shared.dynamo import all_items, items_of_user
from shared.errors import Unauthorized

_ALPHABET = string.ascii_letters + string.digits
KEPT_HASHES = 100  # rotated secrets remembered per session: a replay of one revokes the session


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_session_id() -> str:
    return "ses_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def make_refresh_token(session_id: str) -> tuple[str, str]:
    """A new refresh token for the session, and the hash that is stored."""
    secret = secrets.token_urlsafe(32)
    return f"rt_{session_id}.{secret}", _hash(secret)


def parse_refresh_token(token: str) -> tuple[str, str]:
    """(session id, hash of the secret); a malformed token is simply invalid."""
    if not token.startswith("rt_ses_") or "." not in token:
        raise SessionInvalid()
    session_id, _, secret = token[3:].partition(".")
    if len(session_id) != 28 or not secret:
        raise SessionInvalid()
    return session_id, _hash(secret)


class SessionInvalid(Unauthorized):
    def __init__(self, message: str = "Your session is not valid. Sign in again.", code: str = "session_invalid"):
        super().__init__(message, code=code, headers={})


@dataclass
class Session:
    session_id: str
    user_id: str
    provider: str
    created_at: int
    last_used_at: int
    absolute_expires_at: int
    revoked_at: int | None = None


class RefreshReuse(Exception):
    """A rotated refresh token came back: the family is compromised."""

    def __init__(self, session: Session) -> None:
        super().__init__(session.session_id)
        self.session = session


class SessionsStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, session: Session, token_hash: str, ttl_s: int) -> None:
        await self._db.put_item(TableName=self._table, ConditionExpression="attribute_not_exists(session_id)", Item={
            "session_id": {"S": session.session_id}, "user_id": {"S": session.user_id},
            "provider": {"S": session.provider}, "created_at": {"N": str(session.created_at)},
            "last_used_at": {"N": str(session.last_used_at)},
            "absolute_expires_at": {"N": str(session.absolute_expires_at)}, "current_hash": {"S": token_hash},
            "expires_at": {"N": str(session.absolute_expires_at + ttl_s)}})

    async def get(self, session_id: str) -> tuple[Session, dict[str, Any]] | None:
        item = (await self._db.get_item(TableName=self._table, Key={"session_id": {"S": session_id}},
                                        ConsistentRead=True)).get("Item")
        return (_session(item), item) if item else None

    async def verify(self, session_id: str, secret_hash: str) -> Session:
        """The session a refresh token names, when the token's secret is its current one. A secret it had
        before is a replay (RefreshReuse); any other secret is invalid and changes nothing."""
        return (await self._verified(session_id, secret_hash))[0]

    async def _verified(self, session_id: str, secret_hash: str) -> tuple[Session, dict[str, Any]]:
        found = await self.get(session_id)
        if found is None:
            raise SessionInvalid()
        session, item = found
        if hmac.compare_digest(item["current_hash"]["S"], secret_hash):
            return found
        if any(hmac.compare_digest(secret_hash, h) for h in _previous(item)):
            raise RefreshReuse(session)
        raise SessionInvalid()

    async def rotate(self, session_id: str, old_hash: str, new_hash: str, *, now: int, idle_s: int) -> Session:
        """Swap the current token for a new one, or say why not (invalid, expired, revoked, reused). The last
        KEPT_HASHES secrets are remembered to recognise a replay; older ones are only invalid."""
        _, item = await self._verified(session_id, old_hash)
        history = [*_previous(item), old_hash][-KEPT_HASHES:]
        try:
            result = await self._db.update_item(
                TableName=self._table, Key={"session_id": {"S": session_id}},
                UpdateExpression="SET current_hash = :new, last_used_at = :now, previous_hashes = :history",
                ConditionExpression=("current_hash = :oldh AND attribute_not_exists(revoked_at) "
                                     "AND last_used_at >= :idle AND absolute_expires_at > :now"),
                ExpressionAttributeValues={":new": {"S": new_hash}, ":now": {"N": str(now)},
                                           ":history": {"L": [{"S": h} for h in history]},
                                           ":oldh": {"S": old_hash}, ":idle": {"N": str(now - idle_s)}},
                ReturnValues="ALL_NEW")
            return _session(result["Attributes"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        session = await self.verify(session_id, old_hash)  # a concurrent rotation makes this one a replay
        if session.revoked_at is not None:
            raise SessionInvalid("Your session was signed out. Sign in again.", "session_revoked")
        raise SessionInvalid("Your session has expired. Sign in again.", "session_expired")

    async def revoke(self, session_id: str, reason: str, now: int) -> bool:
        """True when this call revoked it (so the revocation is announced once)."""
        try:
            await self._db.update_item(
                TableName=self._table, Key={"session_id": {"S": session_id}},
                UpdateExpression="SET revoked_at = :now, revoke_reason = :r",
                ConditionExpression="attribute_exists(session_id) AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":now": {"N": str(now)}, ":r": {"S": reason}})
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    async def for_user(self, user_id: str) -> list[Session]:
        return [_session(i) for i in await items_of_user(self._db, self._table, "user-index", user_id)]

    async def revoked_since(self, since: int) -> list[Session]:
        """Sessions revoked after `since` (a gateway replica's start-up catch-up). Scans: the table holds
        live sessions only (TTL), and this runs once per replica start."""
        return [_session(i) async for i in all_items(self._db, "scan", TableName=self._table,
                                                     FilterExpression="revoked_at >= :s",
                                                     ExpressionAttributeValues={":s": {"N": str(since)}})]


def _previous(item: dict[str, Any]) -> list[str]:
    """The remembered secrets' hashes, oldest first (sessions from before the bound hold an unordered set)."""
    history = item.get("previous_hashes", {})
    return [h["S"] for h in history["L"]] if "L" in history else list(history.get("SS", []))


def _session(item: dict[str, Any]) -> Session:
    return Session(session_id=item["session_id"]["S"], user_id=item["user_id"]["S"],
                   provider=item.get("provider", {}).get("S", "password"),
                   created_at=int(item["created_at"]["N"]), last_used_at=int(item["last_used_at"]["N"]),
                   absolute_expires_at=int(item["absolute_expires_at"]["N"]),
                   revoked_at=int(item["revoked_at"]["N"]) if "revoked_at" in item else None)


def now() -> int:
    return int(time.time())
