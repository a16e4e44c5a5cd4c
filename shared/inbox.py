"""Inbox-based deduplication: a message id is handled to completion at most once.

An entry is claimed with a conditional write before the handler runs (`in_progress` with a lease), marked
`done` after it succeeds and released when it fails, so a retry can claim it again. A duplicate that
arrives while the first copy is still being handled sees a live lease and is retried later.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any, Protocol

from botocore.exceptions import ClientError

DONE_TTL_S = 7 * 24 * 3600


class Claim(Enum):
    CLAIMED = "claimed"
    DONE = "done"  # handled before: acknowledge and drop
    BUSY = "busy"  # another consumer holds a live lease: try again later


class Inbox(Protocol):
    async def claim(self, message_id: str, lease_s: int) -> Claim: ...
    async def complete(self, message_id: str) -> None: ...
    async def release(self, message_id: str) -> None: ...


class DynamoInbox:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def claim(self, message_id: str, lease_s: int) -> Claim:
        now = int(time.time())
        try:
            await self._db.put_item(
                TableName=self._table,
                Item={"message_id": {"S": message_id}, "status": {"S": "in_progress"},
                      "lease_until": {"N": str(now + lease_s)}, "expires_at": {"N": str(now + DONE_TTL_S)}},
                ConditionExpression="attribute_not_exists(message_id) OR (#s = :p AND lease_until < :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":p": {"S": "in_progress"}, ":now": {"N": str(now)}},
            )
            return Claim.CLAIMED
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        item = (await self._db.get_item(TableName=self._table, Key={"message_id": {"S": message_id}},
                                        ConsistentRead=True)).get("Item", {})
        return Claim.DONE if item.get("status", {}).get("S") == "done" else Claim.BUSY

    async def complete(self, message_id: str) -> None:
        await self._db.update_item(
            TableName=self._table, Key={"message_id": {"S": message_id}},
            UpdateExpression="SET #s = :d REMOVE lease_until", ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":d": {"S": "done"}},
        )

    async def release(self, message_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key={"message_id": {"S": message_id}})


class MemoryInbox:
    """The same contract in memory, for unit tests of handlers and consumers."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    async def claim(self, message_id: str, lease_s: int) -> Claim:
        state = self.entries.get(message_id)
        if state == "done":
            return Claim.DONE
        if state == "in_progress":
            return Claim.BUSY
        self.entries[message_id] = "in_progress"
        return Claim.CLAIMED

    async def complete(self, message_id: str) -> None:
        self.entries[message_id] = "done"

    async def release(self, message_id: str) -> None:
        self.entries.pop(message_id, None)
