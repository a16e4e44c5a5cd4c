"""Each user's security events, in auth's audit table: what happened, when, from which address and browser.

One partition per user. Events sort by `entry` = `ev#<microseconds><random>`, so a Query reads them newest
first and a page ends at an entry the next page starts after. The addresses a user signed in from sit in the
same partition as `ip#<address>`, so "a sign-in from a new address" is one conditional write. Everything
expires by TTL after the retention; deleting the account deletes the partition.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from services.auth.models import ClientInfo
from shared.dynamo import all_items

# The event types a person sees on the Account page and at GET /api/audit.
ACCOUNT_CREATED = "account.created"
SIGN_IN_SUCCEEDED = "sign_in.succeeded"
SIGN_IN_FAILED = "sign_in.failed"
SIGN_IN_NEW_ADDRESS = "sign_in.new_address"
PASSWORD_CHANGED = "password.changed"  # noqa: S105 (an event name, not a password)
API_KEY_CREATED = "api_key.created"
API_KEY_REVOKED = "api_key.revoked"
GOOGLE_LINKED = "google.linked"

log = logging.getLogger(__name__)

_EVENT = "ev#"
_ADDRESS = "ip#"
_ID_PREFIX = "audit_"
_ALPHABET = string.ascii_lowercase + string.digits
_ID = re.compile(r"^audit_[0-9]{16}[a-z0-9]{6}$")
_BATCH = 25  # BatchWriteItem's most


class BadCursor(ValueError):
    pass


@dataclass
class AuditEntry:
    entry_id: str
    type: str
    created_at: int
    ip_address: str
    user_agent: str
    details: dict[str, str] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"id": self.entry_id, "object": "audit_event", "type": self.type, "created_at": self.created_at,
                "ip_address": self.ip_address, "user_agent": self.user_agent, "details": self.details}


def _sort_key(entry_id: str) -> str:
    if not _ID.match(entry_id):
        raise BadCursor(entry_id)
    return _EVENT + entry_id.removeprefix(_ID_PREFIX)


class AuditStore:
    def __init__(self, dynamodb: Any, table: str, retention_days: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._retention_s = retention_days * 24 * 3600
        self._clock = clock

    async def record(self, user_id: str, event_type: str, client: ClientInfo,
                     details: dict[str, str] | None = None) -> AuditEntry:
        at = self._clock()
        entry = f"{int(at * 1_000_000):016d}" + "".join(secrets.choice(_ALPHABET) for _ in range(6))
        item: dict[str, Any] = {
            "user_id": {"S": user_id}, "entry": {"S": _EVENT + entry}, "type": {"S": event_type},
            "created_at": {"N": str(int(at))}, "ip_address": {"S": client.ip},
            "user_agent": {"S": client.user_agent}, "expires_at": {"N": str(int(at) + self._retention_s)}}
        if details:
            item["details"] = {"M": {k: {"S": v} for k, v in details.items()}}
        await self._db.put_item(TableName=self._table, Item=item)
        return _entry(item)

    async def page(self, user_id: str, limit: int, after: str | None) -> tuple[list[AuditEntry], bool]:
        """Up to `limit` events, newest first, older than the event `after`; and whether more follow."""
        request: dict[str, Any] = {
            "TableName": self._table, "ScanIndexForward": False, "Limit": limit + 1,
            "KeyConditionExpression": "user_id = :u AND begins_with(entry, :ev)",
            "ExpressionAttributeValues": {":u": {"S": user_id}, ":ev": {"S": _EVENT}}}
        if after is not None:
            request["ExclusiveStartKey"] = {"user_id": {"S": user_id}, "entry": {"S": _sort_key(after)}}
        items = (await self._db.query(**request)).get("Items", [])
        return [_entry(i) for i in items[:limit]], len(items) > limit

    async def is_new_address(self, user_id: str, address: str) -> bool:
        """Remember that the user signed in from `address`; True when it was the first time (in the retention)."""
        now = int(self._clock())
        try:
            await self._db.put_item(
                TableName=self._table, ConditionExpression="attribute_not_exists(entry)",
                Item={"user_id": {"S": user_id}, "entry": {"S": _ADDRESS + address},
                      "first_seen": {"N": str(now)}, "expires_at": {"N": str(now + self._retention_s)}})
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False

    async def delete_user(self, user_id: str) -> None:
        """Every event and address of the user."""
        keys = [{"user_id": item["user_id"], "entry": item["entry"]} async for item in all_items(
            self._db, TableName=self._table, KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": user_id}}, ProjectionExpression="user_id, entry")]
        for start in range(0, len(keys), _BATCH):
            requests: list[dict[str, Any]] = [{"DeleteRequest": {"Key": k}} for k in keys[start:start + _BATCH]]
            for attempt in range(8):  # what DynamoDB leaves unprocessed (throttling) is sent again, backing off
                result = await self._db.batch_write_item(RequestItems={self._table: requests})
                requests = result.get("UnprocessedItems", {}).get(self._table, [])
                if not requests:
                    break
                await asyncio.sleep(0.05 * 2 ** attempt)
            if requests:  # they expire by TTL; the account's deletion goes on
                log.error("audit entries left after retries", extra={"user_id": user_id, "left": len(requests)})


def _entry(item: dict[str, Any]) -> AuditEntry:
    return AuditEntry(entry_id=_ID_PREFIX + item["entry"]["S"].removeprefix(_EVENT), type=item["type"]["S"],
                      created_at=int(item["created_at"]["N"]), ip_address=item["ip_address"]["S"],
                      user_agent=item["user_agent"]["S"],
                      details={k: v["S"] for k, v in item.get("details", {}).get("M", {}).items()})
