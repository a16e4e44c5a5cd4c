"""DynamoDB helpers every service's store needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


async def all_items(db: Any, operation: str = "query", **request: Any) -> AsyncIterator[dict[str, Any]]:
    """Every item a Query (or Scan) matches, following LastEvaluatedKey page by page."""
    call = getattr(db, operation)
    while True:
        page = await call(**request)
        for item in page.get("Items", []):
            yield item
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def items_of_user(db: Any, table: str, index: str, user_id: str, **extra: Any) -> list[dict[str, Any]]:
    """All of one user's items through a GSI keyed on user_id."""
    return [item async for item in all_items(db, TableName=table, IndexName=index,
                                             KeyConditionExpression="user_id = :u",
                                             ExpressionAttributeValues={":u": {"S": user_id}}, **extra)]
