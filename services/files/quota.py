"""Per-user storage quota, kept in the usage table (`llm-tuner-files-usage`: one item per user, `bytes`).

Bytes are reserved BEFORE they are stored, by one conditional `ADD` (`bytes <= quota - n`), so concurrent
uploads of one user, on any replica, can never together pass the quota. A failed, aborted or deleted upload
releases what it reserved; a file record's removal and its release are one transaction, so a repeated
delete or abort can never release twice.

The same item counts the user's open direct uploads (`open_uploads`), moved in one transaction with the record
that opens or ends one, so the per-user cap holds on any replica; and a deleted account leaves its item as a
tombstone (`deleted_at`), so that an upload in flight when the account went cannot store anything after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.files.deps import QuotaReservations
from services.files.models import FileRecord
from services.files.store import record_item
from shared.errors import APIError, PayloadTooLarge, Unauthorized


class QuotaExceeded(PayloadTooLarge):
    def __init__(self, quota: int) -> None:
        super().__init__(f"Storing this file would exceed your storage quota of {quota} bytes. "
                         "Delete files you no longer need and try again.", param="file", code="quota_exceeded")


CONFLICT_ATTEMPTS = 5  # a transaction that met another on the same item is tried this often


class TooManyOpenUploads(APIError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, limit: int) -> None:
        super().__init__(f"You have {limit} direct uploads open, the most allowed at once. Complete or abort one "
                         "(DELETE /api/uploads/{id}), then try again.", param="bytes", code="too_many_open_uploads")


class AccountDeleted(Unauthorized):
    def __init__(self) -> None:
        super().__init__("This account has been deleted.", code="account_deleted")


def _cancelled(exc: Exception) -> list[str]:
    """The reason code of each item of a cancelled transaction ("None" for those that passed)."""
    reasons = getattr(exc, "response", {}).get("CancellationReasons") or []
    return [str(r.get("Code", "None")) for r in reasons]


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

    def _update(self, user_id: str, expression: str, values: dict[str, Any], condition: str = "") -> dict[str, Any]:
        """A transaction's Update of the user's usage item, refused once the account is deleted."""
        alive = "attribute_not_exists(deleted_at)"
        return {"Update": {"TableName": self._table, "Key": self._key(user_id), "UpdateExpression": expression,
                           "ConditionExpression": f"({condition}) AND {alive}" if condition else alive,
                           "ExpressionAttributeNames": {n: a for n, a in (("#b", "bytes"), ("#o", "open_uploads"))
                                                        if n in expression + condition},
                           "ExpressionAttributeValues": values}}

    async def _transact(self, items: list[dict[str, Any]]) -> None:
        await self._retrying(lambda: self._db.transact_write_items(TransactItems=items))

    async def _retrying(self, write: Callable[[], Awaitable[Any]]) -> None:
        """One write, tried again while it only met a transaction on the same item (a user's uploads starting and
        ending at once share the usage item); a failed condition is raised at once."""
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                await write()
                return
            except self._db.exceptions.TransactionConflictException:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
            except self._db.exceptions.TransactionCanceledException as exc:
                if set(_cancelled(exc)) - {"None"} != {"TransactionConflict"} or attempt == CONFLICT_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(0.02 * 2 ** attempt)

    async def deleted(self, user_id: str) -> bool:
        item = (await self._db.get_item(TableName=self._table, Key=self._key(user_id),
                                        ConsistentRead=True)).get("Item")
        return bool(item and "deleted_at" in item)

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
            await self._retrying(lambda: self._db.update_item(
                TableName=self._table, Key=self._key(user_id), UpdateExpression="ADD #b :n",
                ConditionExpression="(attribute_not_exists(#b) OR #b <= :ceiling) AND attribute_not_exists(deleted_at)",
                ExpressionAttributeNames={"#b": "bytes"},
                ExpressionAttributeValues={":n": {"N": str(n)}, ":ceiling": {"N": str(ceiling)}}))
        except self._db.exceptions.ConditionalCheckFailedException as exc:
            if await self.deleted(user_id):
                raise AccountDeleted() from exc
            raise QuotaExceeded(quota) from exc

    async def release(self, user_id: str, n: int) -> None:
        """Give back reserved bytes (nothing to give back once the account is deleted)."""
        if not n:
            return
        try:
            await self._retrying(lambda: self._db.update_item(
                TableName=self._table, Key=self._key(user_id), UpdateExpression="ADD #b :n",
                ConditionExpression="attribute_not_exists(deleted_at)", ExpressionAttributeNames={"#b": "bytes"},
                ExpressionAttributeValues={":n": {"N": str(-n)}}))
        except self._db.exceptions.ConditionalCheckFailedException:
            pass

    async def put_file(self, record: FileRecord, *, count_bytes: int = 0) -> bool:
        """Write a file's record (with `count_bytes` more counted against the quota: a training job's results,
        which are never refused), unless the account is deleted (AccountDeleted). False when the record exists
        already (an earlier delivery)."""
        check = (self._update(record.user_id, "ADD #b :n", {":n": {"N": str(count_bytes)}}) if count_bytes else
                 {"ConditionCheck": {"TableName": self._table, "Key": self._key(record.user_id),
                                     "ConditionExpression": "attribute_not_exists(deleted_at)"}})
        put = {"Put": {"TableName": self._files_table, "Item": record_item(record),
                       "ConditionExpression": "attribute_not_exists(file_id)"}}
        try:
            await self._transact([put, check])
        except self._db.exceptions.TransactionCanceledException as exc:
            if _cancelled(exc)[1:2] == ["ConditionalCheckFailed"]:
                raise AccountDeleted() from exc
            if _cancelled(exc)[:1] == ["ConditionalCheckFailed"]:
                return False
            raise
        return True

    async def open_upload(self, record: FileRecord, max_open: int) -> None:
        """Write a direct upload's record and count it among the user's open uploads, together: TooManyOpenUploads
        (429) when `max_open` are open already, AccountDeleted once the account is deleted."""
        put = {"Put": {"TableName": self._files_table, "Item": record_item(record),
                       "ConditionExpression": "attribute_not_exists(file_id)"}}
        count = self._update(record.user_id, "ADD #o :one", {":one": {"N": "1"}, ":max": {"N": str(max_open)}},
                             "attribute_not_exists(#o) OR #o < :max")
        try:
            await self._transact([put, count])
        except self._db.exceptions.TransactionCanceledException as exc:
            if _cancelled(exc)[1:2] == ["ConditionalCheckFailed"]:
                if await self.deleted(record.user_id):
                    raise AccountDeleted() from exc
                raise TooManyOpenUploads(max_open) from exc
            raise

    async def finish_upload(self, file_id: str, user_id: str) -> bool:
        """A direct upload's bytes are all in: `uploading` becomes `uploaded` and it is no longer open, together.
        False when it was not `uploading` any more (completed or aborted meanwhile) or the account is deleted."""
        record = {"Update": {
            "TableName": self._files_table, "Key": {"file_id": {"S": file_id}},
            "UpdateExpression": "SET #s = :uploaded REMOVE upload_id, upload_expires_at",
            "ConditionExpression": "#s = :uploading AND user_id = :u", "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":uploaded": {"S": "uploaded"}, ":uploading": {"S": "uploading"},
                                          ":u": {"S": user_id}}}}
        try:
            await self._transact([record, self._update(user_id, "ADD #o :minus", {":minus": {"N": "-1"}})])
        except self._db.exceptions.TransactionCanceledException as exc:
            if "ConditionalCheckFailed" in _cancelled(exc):
                return False
            raise
        return True

    async def remove_file(self, file_id: str, user_id: str, n: int, *, status: str | None = None) -> bool:
        """Delete the file record and release its `n` bytes, together; False when the record is already gone
        (or, with `status`, no longer in that status), or the account is deleted (its records go with it):
        then nothing is released."""
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
        if status == "uploading":  # a direct upload: no longer open either
            items.append(self._update(user_id, "ADD #b :n, #o :minus", {":n": {"N": str(-n)}, ":minus": {"N": "-1"}}))
        elif n:
            items.append(self._update(user_id, "ADD #b :n", {":n": {"N": str(-n)}}))
        try:
            await self._transact(items)
        except self._db.exceptions.TransactionCanceledException as exc:
            if "ConditionalCheckFailed" in _cancelled(exc):
                return False
            raise
        return True

    async def forget(self, user_id: str) -> None:
        """A deleted account: its usage item becomes a tombstone (the user id and when), so that no upload in
        flight can reserve, open or complete anything after, however late it comes."""
        await self._db.put_item(TableName=self._table, Item={**self._key(user_id),
                                                             "deleted_at": {"N": str(int(time.time()))}})


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
