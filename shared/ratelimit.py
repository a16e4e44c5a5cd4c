"""Fixed-window rate limits kept in DynamoDB, so every replica shares them.

One item per (bucket, window): an atomic ADD counts the hit and says how many there were. Items expire by
TTL after their window. A refused hit answers 429 with Retry-After and the error envelope.
"""

from __future__ import annotations

import time
from typing import Any

from shared.errors import APIError


class RateLimited(APIError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, retry_after_s: int, message: str = "Too many attempts. Try again later.") -> None:
        super().__init__(message, code="rate_limit_exceeded", headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class RateLimiter:
    def __init__(self, dynamodb: Any, table: str, clock: Any = time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    def _window(self, name: str, window_s: int) -> tuple[str, int]:
        now = int(self._clock())
        start = now - now % window_s
        return f"{name}@{start}", start + window_s - now

    async def hit(self, name: str, limit: int, window_s: int) -> None:
        """Count one attempt; refuse it when the window already holds `limit`."""
        key, retry_after = self._window(name, window_s)
        result = await self._db.update_item(
            TableName=self._table, Key={"bucket": {"S": key}},
            UpdateExpression="ADD hits :one SET expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": {"N": str(int(self._clock()) + window_s + 60)}},
            ReturnValues="UPDATED_NEW")
        if int(result["Attributes"]["hits"]["N"]) > limit:
            raise RateLimited(max(1, retry_after))

    async def check(self, name: str, limit: int, window_s: int) -> None:
        """Refuse when the window already holds `limit` hits, without counting this one."""
        key, retry_after = self._window(name, window_s)
        item = (await self._db.get_item(TableName=self._table, Key={"bucket": {"S": key}},
                                        ConsistentRead=True)).get("Item")
        if item and int(item["hits"]["N"]) >= limit:
            raise RateLimited(max(1, retry_after))

    async def count(self, name: str, window_s: int) -> None:
        """Count a hit (a failed login, say) that `check` looks at."""
        key, _ = self._window(name, window_s)
        await self._db.update_item(
            TableName=self._table, Key={"bucket": {"S": key}},
            UpdateExpression="ADD hits :one SET expires_at = if_not_exists(expires_at, :exp)",
            ExpressionAttributeValues={":one": {"N": "1"}, ":exp": {"N": str(int(self._clock()) + window_s + 60)}})
