"""Failed sign-ins, counted where a guesser cannot outrun the count.

Each (email, client address) pair has one item in the rate-limits table. A password check is admitted by one
conditional UpdateItem that counts it *before* it runs: the condition says whether this pair may try now, and
a concurrent request sees the count the one before it left, so of forty parallel guesses only those within
the allowance are checked. The first `free` checks are admitted at once; after them each check must wait
2, 4, 8... seconds (capped) after the previous one. A success resets the pair. Counts live in
a window of `memory_s` (part of the key) and expire by TTL, so an unknown email leaves nothing for long.

The lock is per address: whoever guesses from one place never locks the owner out from another. Separately,
failures against one existing account from anywhere are counted (`count_failure`) so a person can be alerted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from shared.ratelimit import RateLimited


def backoff_s(checks: int, free: int, first_s: int, cap_s: int) -> int:
    """How long after the previous check the next one may run, when `checks` have been made: nothing within
    the free ones, then first_s, doubling each time, capped."""
    if checks < free:
        return 0
    return min(first_s * 2 ** min(checks - free, 30), cap_s)


class LoginThrottle:
    def __init__(self, dynamodb: Any, table: str, *, free: int, first_s: int, cap_s: int, memory_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._free = free
        self._first_s = first_s
        self._cap_s = max(cap_s, first_s)
        self._memory_s = memory_s
        self._clock = clock

    def _key(self, email: str, address: str, now: int) -> dict[str, Any]:
        start = now - now % self._memory_s
        return {"bucket": {"S": f"login:{email}|{address}@{start}"}}

    def _admission(self, now: int) -> tuple[str, dict[str, Any]]:
        """The condition under which one more check may run now: a term per step of the backoff, the last
        one (the cap) for every count beyond."""
        terms = ["attribute_not_exists(checks)", "checks < :free"]
        values: dict[str, Any] = {":free": {"N": str(self._free)}}
        checks = self._free
        while True:
            wait = backoff_s(checks, self._free, self._first_s, self._cap_s)
            values[f":c{checks}"] = {"N": str(checks)}
            values[f":t{checks}"] = {"N": str(now - wait)}
            if wait >= self._cap_s:
                terms.append(f"(checks >= :c{checks} AND last_at <= :t{checks})")
                return " OR ".join(terms), values
            terms.append(f"(checks = :c{checks} AND last_at <= :t{checks})")
            checks += 1

    async def admit(self, email: str, address: str) -> None:
        """Count one password check for this pair, or refuse it (429 with Retry-After) without counting."""
        now = int(self._clock())
        condition, values = self._admission(now)
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(email, address, now),
                UpdateExpression="ADD checks :one SET last_at = :now, expires_at = :exp",
                ConditionExpression=condition,
                ExpressionAttributeValues={**values, ":one": {"N": "1"}, ":now": {"N": str(now)},
                                           ":exp": {"N": str(now + self._memory_s + self._cap_s)}})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raise RateLimited(await self._retry_after(email, address, now),
                              "Too many failed sign-ins from this address. Try again later.") from None

    async def _retry_after(self, email: str, address: str, now: int) -> int:
        item = (await self._db.get_item(TableName=self._table, Key=self._key(email, address, now),
                                        ConsistentRead=True)).get("Item", {})
        checks = int(item.get("checks", {}).get("N", "0"))
        last_at = int(item.get("last_at", {}).get("N", str(now)))
        return max(1, last_at + backoff_s(checks, self._free, self._first_s, self._cap_s) - now)

    async def succeeded(self, email: str, address: str) -> None:
        """The right password: this pair starts afresh."""
        await self._db.delete_item(TableName=self._table, Key=self._key(email, address, int(self._clock())))

    async def count_failure(self, user_id: str, window_s: int) -> int:
        """One more failed sign-in to this account from anywhere; how many there were in this window."""
        now = int(self._clock())
        start = now - now % window_s
        result = await self._db.update_item(
            TableName=self._table, Key={"bucket": {"S": f"login-failures:{user_id}@{start}"}},
            UpdateExpression="ADD hits :one SET expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": {"N": str(start + window_s + 60)}},
            ReturnValues="UPDATED_NEW")
        return int(result["Attributes"]["hits"]["N"])
