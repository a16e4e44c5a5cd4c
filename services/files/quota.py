"""Per-user storage quota, kept in the usage table (`llm-tuner-files-usage`: one item per user, `bytes`).

Bytes are reserved BEFORE they are stored, by one conditional `ADD` (`bytes <= quota - n`), so concurrent
uploads of one user, on any replica, can never together pass the quota. A failed, aborted or deleted upload
releases what it reserved; a file record's removal and its release are one transaction, so a repeated
delete or abort can never release twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.files.deps import QuotaReservations
from shared.errors import PayloadTooLarge


class QuotaExceeded(PayloadTooLarge):
    def __init__(self, quota: int) -> None:
        super().__init__(f"Storing this file would exceed your storage quota of {quota} bytes. "
                         "Delete files you no longer need and try again.", param="file", code="quota_exceeded")


def usage_ceiling(quota: int, n: int) -> int | None:
    """The most a user may already use for `n` more bytes to fit in `quota`; None when `n` alone does not."""
    return quota - n if 0 <= n <= quota else None


def reservation_step(reserved: int, needed: int, step: int, ceiling: int) -> int:
    """How much more to reserve so that `needed` bytes are covered: a whole `step` at a time (one DynamoDB
    write per step, not per chunk), never beyond `ceiling` (the file size limit), 0 when already covered."""
    if needed <= reserved:
        return 0
    return max(needed - reserved, min(step, ceiling - reserved))


class UsageStore:
    """The usage table, and the one write that must move with it: the removal of a file record."""

    def __init__(self, dynamodb: Any, table: str, files_table: str) -> None:
        self._db = dynamodb
        self._table = table
        self._files_table = files_table

    def _key(self, user_id: str) -> dict[str, Any]:
        return {"user_id": {"S": user_id}}

    async def used(self, user_id: str) -> int:
        item = (await self._db.get_item(TableName=self._table, Key=self._key(user_id),
                                        ConsistentRead=True)).get("Item")
        return int(item["bytes"]["N"]) if item and "bytes" in item else 0

    async def reserve(self, user_id: str, n: int, quota: int) -> None:
        """Add `n` to the user's usage if it stays within `quota`; QuotaExceeded (413) otherwise."""
        ceiling = usage_ceiling(quota, n)
        if ceiling is None:
            raise QuotaExceeded(quota)
        if n == 0:
            return
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(user_id), UpdateExpression="ADD #b :n",
                ConditionExpression="attribute_not_exists(#b) OR #b <= :ceiling",
                ExpressionAttributeNames={"#b": "bytes"},
                ExpressionAttributeValues={":n": {"N": str(n)}, ":ceiling": {"N": str(ceiling)}})
        except self._db.exceptions.ConditionalCheckFailedException as exc:
            raise QuotaExceeded(quota) from exc

    async def add(self, user_id: str, n: int) -> None:
        """Count bytes the user did not upload and that cannot be refused (a training job's result file)."""
        if n:
            await self._db.update_item(TableName=self._table, Key=self._key(user_id), UpdateExpression="ADD #b :n",
                                       ExpressionAttributeNames={"#b": "bytes"},
                                       ExpressionAttributeValues={":n": {"N": str(n)}})

    async def release(self, user_id: str, n: int) -> None:
        await self.add(user_id, -n)

    async def remove_file(self, file_id: str, user_id: str, n: int, *, status: str | None = None) -> bool:
        """Delete the file record and release its `n` bytes, together; False when the record is already gone
        (or, with `status`, no longer in that status): then nothing is released."""
        condition = "attribute_exists(file_id) AND user_id = :u"
        values: dict[str, Any] = {":u": {"S": user_id}}
        names: dict[str, str] = {}
        if status is not None:
            condition += " AND #s = :s"
            values[":s"] = {"S": status}
            names["#s"] = "status"
        delete: dict[str, Any] = {"TableName": self._files_table, "Key": {"file_id": {"S": file_id}},
                                  "ConditionExpression": condition, "ExpressionAttributeValues": values}
        if names:
            delete["ExpressionAttributeNames"] = names
        items: list[dict[str, Any]] = [{"Delete": delete}]
        if n:
            items.append({"Update": {"TableName": self._table, "Key": self._key(user_id),
                                     "UpdateExpression": "ADD #b :n", "ExpressionAttributeNames": {"#b": "bytes"},
                                     "ExpressionAttributeValues": {":n": {"N": str(-n)}}}})
        try:
            await self._db.transact_write_items(TransactItems=items)
        except self._db.exceptions.TransactionCanceledException:
            return False
        return True

    async def forget(self, user_id: str) -> None:
        """A deleted account's usage item."""
        await self._db.delete_item(TableName=self._table, Key=self._key(user_id))


class Reservation:
    """One upload's share of the quota, grown as its bytes arrive and settled at the end. `on_full` may free
    space when the quota is reached (expired uploads); it runs at most once, and True means "try again"."""

    def __init__(self, usage: QuotaReservations, user_id: str, quota: int, *, step: int, ceiling: int,
                 on_full: Callable[[], Awaitable[bool]] | None = None) -> None:
        self._usage, self._user_id, self._quota = usage, user_id, quota
        self._step, self._ceiling = step, ceiling
        self._on_full = on_full
        self.reserved = 0

    async def _reserve(self, n: int) -> None:
        try:
            await self._usage.reserve(self._user_id, n, self._quota)
        except QuotaExceeded:
            on_full, self._on_full = self._on_full, None
            if on_full is None or not await on_full():
                raise
            await self._usage.reserve(self._user_id, n, self._quota)

    async def cover(self, needed: int) -> None:
        """Make sure `needed` bytes are reserved; QuotaExceeded when they do not fit."""
        more = reservation_step(self.reserved, needed, self._step, self._ceiling)
        if more == 0:
            return
        exact = needed - self.reserved
        try:
            await self._reserve(more)
        except QuotaExceeded:
            if more == exact:
                raise
            await self._reserve(exact)  # a whole step does not fit, what this write needs still may
            more = exact
        self.reserved += more

    async def settle(self, size: int) -> None:
        """Keep exactly `size` bytes reserved (the stored file), release the rest."""
        if self.reserved > size:
            await self._usage.release(self._user_id, self.reserved - size)
        self.reserved = size

    async def cancel(self) -> None:
        if self.reserved:
            await self._usage.release(self._user_id, self.reserved)
        self.reserved = 0
