"""Measured training speed per (model, instance type): one small item each, summed by atomic counters, so the
running average (total seconds / total tokens) needs no read before the write."""

from __future__ import annotations

from typing import Any


def _key(model: str, instance_type: str) -> dict[str, Any]:
    return {"model_instance": {"S": f"{model}|{instance_type}"}}


class ThroughputStore:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def record(self, model: str, instance_type: str, seconds: float, tokens: int) -> None:
        if seconds <= 0 or tokens <= 0:
            return
        await self._db.update_item(
            TableName=self._table, Key=_key(model, instance_type),
            UpdateExpression="ADD total_seconds :s, total_tokens :t, jobs :one",
            ExpressionAttributeValues={":s": {"N": f"{seconds:.3f}"}, ":t": {"N": str(tokens)},
                                       ":one": {"N": "1"}})

    async def seconds_per_token(self, model: str, instance_type: str) -> float | None:
        item = (await self._db.get_item(TableName=self._table, Key=_key(model, instance_type),
                                        ConsistentRead=True)).get("Item")
        if not item:
            return None
        tokens = float(item["total_tokens"]["N"])
        return float(item["total_seconds"]["N"]) / tokens if tokens > 0 else None
