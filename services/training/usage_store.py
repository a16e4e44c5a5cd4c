"""Each user's usage counters (limits.py), one item per user in the jobs table under the key `usage#{user_id}`
(it has neither `user_id` nor `active_status`, so neither of the table's indexes ever lists it):
`active_jobs`, `reserved_micros` (the ceilings of the active jobs) and `billed_YYYY_MM` (what the jobs that ended
in that month were billed).

A job is created together with its reservation, in one transaction whose update carries the limits as its
condition (`active_jobs < max`, `reserved_micros <= limit - billed - this job`, `billed` as read): two creations
at the same instant, on any replica, can never together pass a limit; a condition that fails because a job ended
meanwhile (its bill moved) is read again. A job's reservation is released, and its bill counted, by the same
transaction that moves it to a final status (store.JobsStore.transition), so it happens exactly once.
"""

from __future__ import annotations

import logging
from typing import Any

from services.training import limits
from services.training.limits import Limits, Usage
from services.training.models import Job
from services.training.store import ACTIVE_JOBS, ATTEMPTS, RESERVED, cancellation_codes, job_item, usage_key
from shared.errors import Unavailable

log = logging.getLogger(__name__)


class UsageStore:
    def __init__(self, dynamodb: Any, jobs_table: str) -> None:
        self._db = dynamodb
        self._table = jobs_table

    async def usage(self, user_id: str) -> Usage:
        item = (await self._db.get_item(TableName=self._table, Key=usage_key(user_id),
                                        ConsistentRead=True)).get("Item") or {}

        def number(name: str) -> int:
            return int(item[name]["N"]) if name in item else 0

        return Usage(active_jobs=max(0, number(ACTIVE_JOBS)), reserved_micros=max(0, number(RESERVED)),
                     billed_micros=number(limits.month_key()))

    async def create_within(self, job: Job, rules: Limits) -> None:
        """Write the job (as store.JobsStore.create does) and reserve its `reserved_micros`, if the user's
        counters allow it under `rules`; TooManyActiveJobs or SpendLimitReached otherwise."""
        await self._within_limits(job, {"Put": {"TableName": self._table, "Item": job_item(job),
                                                "ConditionExpression": "attribute_not_exists(job_id)"}},
                                  rules, job.reserved_micros or 0)

    async def reserve_with(self, job: Job, write: dict[str, Any], rules: Limits, job_micros: int) -> bool:
        """A job at rest made active again (resume, retry: `write`, store.JobsStore.reactivate's update) and its new
        reservation, together and within the limits, as create_within does for a new job. False when the job's
        status moved meanwhile."""
        return await self._within_limits(job, {"Update": write}, rules, job_micros)

    async def _within_limits(self, job: Job, item: dict[str, Any], rules: Limits, job_micros: int) -> bool:
        """`item` (the job's write) and the reservation in one transaction, the limits checked against the counters
        as read and written as its condition; a race with another change of the user's jobs is read again. False
        when the job's own condition failed."""
        for _ in range(ATTEMPTS):
            usage = await self.usage(job.user_id)
            refused = limits.refusal(rules, usage, job_micros)
            if refused is not None:
                raise refused
            try:
                await self._db.transact_write_items(TransactItems=[item, self._reserve(job, job_micros, usage, rules)])
                return True
            except self._db.exceptions.TransactionCanceledException as exc:
                reasons = cancellation_codes(exc)
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False  # the job is not where its write expects it
                log.info("a job's reservation raced", extra={"user_id": job.user_id, "job_id": job.job_id,
                                                              "reasons": reasons})
        raise Unavailable("Too many changes to your jobs at once; try again.", code="busy")

    def _reserve(self, job: Job, job_micros: int, usage: Usage, rules: Limits) -> dict[str, Any]:
        month = limits.month_key()
        names = {"#a": ACTIVE_JOBS, "#r": RESERVED, "#o": "owner"}
        values: dict[str, Any] = {":one": {"N": "1"}, ":c": {"N": str(job_micros)}, ":o": {"S": job.user_id}}
        conditions = []
        if rules.max_active_jobs is not None:
            conditions.append("(attribute_not_exists(#a) OR #a < :max)")
            values[":max"] = {"N": str(rules.max_active_jobs)}
        ceiling = rules.spend_limit_micros
        if ceiling is not None:
            names["#b"] = month
            values[":room"] = {"N": str(ceiling - usage.billed_micros - job_micros)}
            values[":billed"] = {"N": str(usage.billed_micros)}
            conditions.append("(attribute_not_exists(#r) OR #r <= :room)")
            conditions.append("(attribute_not_exists(#b) OR #b = :billed)" if usage.billed_micros == 0
                              else "#b = :billed")
        update: dict[str, Any] = {"TableName": self._table, "Key": usage_key(job.user_id),
                                  "UpdateExpression": "SET #o = :o ADD #a :one, #r :c",
                                  "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
        if conditions:
            update["ConditionExpression"] = " AND ".join(conditions)
        return {"Update": update}

    async def forget(self, user_id: str) -> None:
        """A deleted account's counters."""
        await self._db.delete_item(TableName=self._table, Key=usage_key(user_id))
