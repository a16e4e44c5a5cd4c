"""API keys for programs: shown once, stored hashed, listed by name and prefix, revoked by id.

A key is `sk-` + its 16-character id + a 32-character secret, so a lookup is one GetItem by id and the
secret is compared by hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from shared.dynamo import items_of_user

_ALPHABET = string.ascii_letters + string.digits
KEY_ID_CHARS = 16
SECRET_CHARS = 32
PREFIX_CHARS = 11  # "sk-" and 8 characters of the id: enough to tell keys apart in a list


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(the key to show once, its id, the hash to store)."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_ID_CHARS))
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_CHARS))
    return f"sk-{key_id}{secret}", key_id, _hash(secret)


def split_key(key: str) -> tuple[str, str] | None:
    """(id, hash of the secret) of a well-formed key, else None."""
    body = key.removeprefix("sk-")
    if not key.startswith("sk-") or len(body) != KEY_ID_CHARS + SECRET_CHARS or not body.isalnum():
        return None
    return body[:KEY_ID_CHARS], _hash(body[KEY_ID_CHARS:])


@dataclass
class ApiKey:
    key_id: str
    user_id: str
    name: str
    prefix: str
    created_at: int
    last_used_at: int | None = None
    revoked_at: int | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.key_id, "object": "api_key", "name": self.name, "prefix": self.prefix,
                "created_at": self.created_at, "last_used_at": self.last_used_at}


class ApiKeysStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, key: ApiKey, key_hash: str) -> None:
        await self._db.put_item(TableName=self._table, ConditionExpression="attribute_not_exists(key_id)", Item={
            "key_id": {"S": key.key_id}, "user_id": {"S": key.user_id}, "name": {"S": key.name},
            "prefix": {"S": key.prefix}, "created_at": {"N": str(key.created_at)}, "key_hash": {"S": key_hash}})

    async def get(self, key_id: str) -> tuple[ApiKey, str] | None:
        item = (await self._db.get_item(TableName=self._table, Key={"key_id": {"S": key_id}},
                                        ConsistentRead=True)).get("Item")
        return (_key(item), item["key_hash"]["S"]) if item else None

    async def verify(self, key: str) -> ApiKey | None:
        """The live key a presented secret belongs to, or None."""
        parts = split_key(key)
        if parts is None:
            return None
        found = await self.get(parts[0])
        if found is None or not hmac.compare_digest(found[1], parts[1]) or found[0].revoked_at is not None:
            return None
        return found[0]

    async def for_user(self, user_id: str) -> list[ApiKey]:
        """Newest first."""
        return [_key(i) for i in await items_of_user(self._db, self._table, "user-index", user_id,
                                                     ScanIndexForward=False)]

    async def touch(self, key_id: str, now: int, every_s: int = 60) -> None:
        """Record use, at most once a minute (a busy key must not become a write per request)."""
        try:
            await self._db.update_item(
                TableName=self._table, Key={"key_id": {"S": key_id}}, UpdateExpression="SET last_used_at = :n",
                ConditionExpression="attribute_not_exists(last_used_at) OR last_used_at < :stale",
                ExpressionAttributeValues={":n": {"N": str(now)}, ":stale": {"N": str(now - every_s)}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    async def revoke(self, key_id: str, user_id: str, now: int) -> bool:
        """True when this call revoked the caller's own live key."""
        try:
            await self._db.update_item(
                TableName=self._table, Key={"key_id": {"S": key_id}}, UpdateExpression="SET revoked_at = :n",
                ConditionExpression="user_id = :u AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":n": {"N": str(now)}, ":u": {"S": user_id}})
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise


def _key(item: dict[str, Any]) -> ApiKey:
    def number(key: str) -> int | None:
        return int(item[key]["N"]) if key in item else None

    return ApiKey(key_id=item["key_id"]["S"], user_id=item["user_id"]["S"], name=item["name"]["S"],
                  prefix=item["prefix"]["S"], created_at=int(item["created_at"]["N"]),
                  last_used_at=number("last_used_at"), revoked_at=number("revoked_at"))
