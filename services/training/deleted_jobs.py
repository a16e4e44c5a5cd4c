"""What a deleted account leaves for SageMaker to finish: its jobs that may still have a training job.

Deleting an account (user_deletion.py) removes its jobs at once, but a training job being launched, running or
stopping can still write to the bucket: SageMaker uploads the model and the checkpoints after a stop. So the
deletion first notes each such job here, in the jobs table under keys no index lists:

- `deleted#{job_id}` (its `owner`): when SageMaker's event says that training job ended, the job's prefix is
  deleted again, whatever it uploaded meanwhile, and the note goes (sagemaker_state.py);
- `deleted-user#{user_id}` (the set of those job ids): the stops the deletion still owes, read again when the
  deletion's message is retried, and removed once every stop was answered.

A job that never reached SageMaker sends no end, so its note carries `expires_at`, past the longest a training job
can run (SageMaker's cap is 28 days), for the table's TTL to remove it where the table has one.
"""

from __future__ import annotations

import time
from typing import Any

NOTE_LIFETIME_S = 30 * 24 * 3600


def _job_key(job_id: str) -> dict[str, Any]:
    return {"job_id": {"S": f"deleted#{job_id}"}}


def _user_key(user_id: str) -> dict[str, Any]:
    return {"job_id": {"S": f"deleted-user#{user_id}"}}


class DeletedJobsStore:
    def __init__(self, dynamodb: Any, jobs_table: str) -> None:
        self._db = dynamodb
        self._table = jobs_table

    async def remember(self, user_id: str, job_ids: list[str]) -> None:
        for job_id in job_ids:
            await self._db.put_item(TableName=self._table, Item={
                **_job_key(job_id), "owner": {"S": user_id},
                "expires_at": {"N": str(int(time.time()) + NOTE_LIFETIME_S)}})
        if job_ids:
            await self._db.update_item(TableName=self._table, Key=_user_key(user_id), UpdateExpression="ADD #j :j",
                                       ExpressionAttributeNames={"#j": "jobs"},
                                       ExpressionAttributeValues={":j": {"SS": job_ids}})

    async def stops_owed(self, user_id: str) -> list[str]:
        item = (await self._db.get_item(TableName=self._table, Key=_user_key(user_id),
                                        ConsistentRead=True)).get("Item") or {}
        return sorted(item.get("jobs", {}).get("SS", []))

    async def stops_done(self, user_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key=_user_key(user_id))

    async def owner_of(self, job_id: str) -> str | None:
        item = (await self._db.get_item(TableName=self._table, Key=_job_key(job_id),
                                        ConsistentRead=True)).get("Item")
        return str(item["owner"]["S"]) if item else None

    async def forget(self, job_id: str) -> None:
        await self._db.delete_item(TableName=self._table, Key=_job_key(job_id))
