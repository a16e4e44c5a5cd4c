"""training's tables: jobs (GSI `user-index` on user_id + created_at), job events, its files projection.

The jobs table's sparse GSI `status-index` (hash `active_status`, range `created_at`) holds only the jobs
that are not over: `active_status` is the job's status while it is validating_files, queued or running, and is
removed by the transition that ends it. The reconciler queries it per active status instead of scanning.

Job states move only by conditional writes naming the states the move is allowed from (transitions.py), so two
workers can never both launch, finish or cancel the same job.

The same index finds the jobs a file's validation wakes (jobs_waiting_on_file): a job in validating_files names
its files, and its record, written before its launch command is sent, is all the waiting a launch needs to record.

The move to a final status also ends the job's spend reservation in its user's usage item (usage_store.py), in
the same transaction, for jobs that made one.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from services.training import transitions
from services.training.limits import month_key
from services.training.models import AT_REST, FileView, Job, JobStatus
from services.training.parts import ended_parts
from shared.dynamo import all_items, items_of_user

_ser, _de = TypeSerializer(), TypeDeserializer()
_JSON_FIELDS = ("hyperparameters", "metadata", "error", "result_files", "parts")
_STATUS_RANK = {"uploaded": 0, "processed": 1, "error": 1, "deleted": 2}
ACTIVE_STATUSES = ("validating_files", "queued", "running", "pausing")
ACTIVE_ATTRIBUTE = "active_status"  # the sparse `status-index` GSI's hash key: present only while active


def _attribute(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, float):  # DynamoDB's numbers are decimals (a job's max_cost_usd)
        value = Decimal(str(value))
    serialized: dict[str, Any] = _ser.serialize(json.dumps(value) if key in _JSON_FIELDS else value)
    return serialized


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _attribute(key, value) for key, value in values.items() if value is not None}


def _from_item(item: dict[str, Any]) -> dict[str, Any]:
    values = {k: _de.deserialize(v) for k, v in item.items()}
    for key, value in values.items():
        if key in _JSON_FIELDS and isinstance(value, str):
            values[key] = json.loads(value)
        elif hasattr(value, "as_integer_ratio") and not isinstance(value, (int, float)):
            values[key] = int(value) if value == int(value) else float(value)
    return values


ATTEMPTS = 5  # a creation re-read this many times while jobs end under it (each end bumps the bill it read)
# A user's usage item (usage_store.py) shares the jobs table: its key, and the counters a job's end moves.
ACTIVE_JOBS, RESERVED = "active_jobs", "reserved_micros"


def usage_key(user_id: str) -> dict[str, Any]:
    return {"job_id": {"S": f"usage#{user_id}"}}


def cancellation_codes(exc: Exception) -> list[str]:
    """The per-item reasons DynamoDB gives for a cancelled transaction ("None" for the items that were fine)."""
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    return [str(r.get("Code", "None")) for r in response.get("CancellationReasons") or []]


def release_update(table: str, job: Job, billed_micros: int, month: str) -> dict[str, Any]:
    """The transaction item that ends `job`'s reservation and adds its bill to `month`'s."""
    return {"Update": {
        "TableName": table, "Key": usage_key(job.user_id), "UpdateExpression": "ADD #a :a, #r :r, #b :b",
        "ExpressionAttributeNames": {"#a": ACTIVE_JOBS, "#r": RESERVED, "#b": month},
        "ExpressionAttributeValues": {":a": {"N": "-1"}, ":r": {"N": str(-(job.reserved_micros or 0))},
                                      ":b": {"N": str(billed_micros)}}}}


def job_item(job: Job) -> dict[str, Any]:
    """A new job as the table holds it (usage_store writes it too, with its reservation)."""
    item = to_item(job.model_dump())
    if job.status in ACTIVE_STATUSES:
        item[ACTIVE_ATTRIBUTE] = {"S": job.status}
    return item


class JobsStore:
    def __init__(self, dynamodb: Any, jobs_table: str, events_table: str, files_table: str) -> None:
        self._db = dynamodb
        self._jobs = jobs_table
        self._events = events_table
        self._files = files_table

    async def create(self, job: Job) -> None:
        await self._db.put_item(TableName=self._jobs, Item=job_item(job),
                                ConditionExpression="attribute_not_exists(job_id)")

    async def get(self, job_id: str) -> Job | None:
        item = (await self._db.get_item(TableName=self._jobs, Key={"job_id": {"S": job_id}},
                                        ConsistentRead=True)).get("Item")
        return Job.model_validate(_from_item(item)) if item else None

    async def list_for_user(self, user_id: str, limit: int, after: Job | None) -> tuple[list[Job], bool]:
        """Newest first, one GSI query with a page limit: the cost follows the page, not the table."""
        kwargs: dict[str, Any] = {
            "TableName": self._jobs, "IndexName": "user-index", "ScanIndexForward": False, "Limit": limit + 1,
            "KeyConditionExpression": "user_id = :u", "ExpressionAttributeValues": {":u": {"S": user_id}}}
        if after is not None:
            kwargs["ExclusiveStartKey"] = {"job_id": {"S": after.job_id}, "user_id": {"S": after.user_id},
                                           "created_at": {"S": after.created_at}}
        items = (await self._db.query(**kwargs)).get("Items", [])
        jobs = [Job.model_validate(_from_item(i)) for i in items]
        return jobs[:limit], len(jobs) > limit

    async def transition(self, job_id: str, to: JobStatus, *, only_from: JobStatus | None = None,
                         bill_micros: int | None = None, billed_seconds: int | None = None,
                         **changes: Any) -> bool:
        """Move a job to `to` if its status allows it (transitions.py; with `only_from`: if it is still that one);
        False when it does not, as when another writer got there first. A move from an active status to one at
        rest (over, or paused) ends the current part (parts.py): what SageMaker billed for it (`bill_micros`,
        `billed_seconds`) is added to the job's bill and released from its user's reservation."""
        job = await self.get(job_id) if to in AT_REST else None
        releasing = job is not None and job.status not in AT_REST
        if releasing:
            assert job is not None
            if only_from is None and job.status in transitions.expected(to):
                only_from = job.status  # what is released below is what this read saw
            bill = int(bill_micros or 0)
            if bill_micros is not None:
                changes["billed_micros"] = (job.billed_micros or 0) + bill
            if job.parts and not job.parts[-1].get("outcome"):
                changes["parts"] = ended_parts(job.parts, to, bill_micros, billed_seconds)
        expected = transitions.expected(to, only_from)
        if not expected:
            return False
        write = self._status_write(job_id, to, expected, changes)
        if releasing and job is not None and job.reserved_micros is not None:  # jobs from before reserve nothing
            return await self._end_with_usage(job, write, int(bill_micros or 0))
        try:
            await self._db.update_item(**write)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    def _status_write(self, job_id: str, to: JobStatus, expected: tuple[JobStatus, ...],
                      changes: dict[str, Any]) -> dict[str, Any]:
        """The conditional update moving the job to `to` from one of `expected`, with `changes`."""
        values: dict[str, Any] = {":to": {"S": to}}
        names = {"#s": "status"}
        sets = ["#s = :to"]
        for i, (key, value) in enumerate(changes.items()):
            if value is None:
                continue
            names[f"#f{i}"] = key
            values[f":v{i}"] = _attribute(key, value)
            sets.append(f"#f{i} = :v{i}")
        names["#active"] = ACTIVE_ATTRIBUTE  # the sparse status-index follows the status, or drops the job
        if to in ACTIVE_STATUSES:
            sets.append("#active = :to")
            update = "SET " + ", ".join(sets)
        else:
            update = "SET " + ", ".join(sets) + " REMOVE #active"
        conditions = []
        for i, state in enumerate(expected):
            values[f":e{i}"] = {"S": state}
            conditions.append(f":e{i}")
        return {"TableName": self._jobs, "Key": {"job_id": {"S": job_id}}, "UpdateExpression": update,
                "ConditionExpression": f"#s IN ({', '.join(conditions)})", "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values}

    async def _end_with_usage(self, job: Job, write: dict[str, Any], billed_micros: int) -> bool:
        """The move to a status at rest and the release of the job's reservation (its bill counted), as one
        transaction: they happen together, once. A conflict with a concurrent transaction is tried again."""
        for _ in range(ATTEMPTS):
            try:
                await self._db.transact_write_items(TransactItems=[
                    {"Update": write}, release_update(self._jobs, job, billed_micros, month_key())])
                return True
            except self._db.exceptions.TransactionCanceledException as exc:
                if "TransactionConflict" not in cancellation_codes(exc):
                    return False  # the job's status did not allow the move (or the job is gone)
        raise RuntimeError(f"job {job.job_id}'s final move kept conflicting")

    async def reactivate(self, job: Job, to: JobStatus, usage: Any, rules: Any, **changes: Any) -> bool:
        """Move a job at rest (paused, failed, cancelled) back to `to` (queued or validating_files) with a new
        reservation when `usage` (usage_store.UsageStore) is given: the job's move and the reservation together,
        within the user's limits (TooManyActiveJobs, SpendLimitReached). False when the job moved meanwhile."""
        expected = transitions.expected(to, job.status)
        if not expected:
            return False
        write = self._status_write(job.job_id, to, expected, changes)
        if usage is None:
            try:
                await self._db.update_item(**write)
                return True
            except self._db.exceptions.ConditionalCheckFailedException:
                return False
        return bool(await usage.reserve_with(job, write, rules, int(changes.get("reserved_micros") or 0)))

    async def set_fields(self, job_id: str, **changes: Any) -> None:
        """Set fields of an existing job; nothing when the job is gone (its user was deleted meanwhile): an update
        must never leave a partial job behind."""
        names = {f"#f{i}": k for i, k in enumerate(changes)}
        values = {f":v{i}": _ser.serialize(v) for i, v in enumerate(changes.values())}
        try:
            await self._db.update_item(
                TableName=self._jobs, Key={"job_id": {"S": job_id}}, ConditionExpression="attribute_exists(job_id)",
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(changes))),
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except self._db.exceptions.ConditionalCheckFailedException:
            pass

    async def clear_fields(self, job_id: str, *names: str) -> None:
        """Remove fields of an existing job (a retried job's error and end); nothing when the job is gone."""
        try:
            await self._db.update_item(
                TableName=self._jobs, Key={"job_id": {"S": job_id}}, ConditionExpression="attribute_exists(job_id)",
                UpdateExpression="REMOVE " + ", ".join(f"#f{i}" for i in range(len(names))),
                ExpressionAttributeNames={f"#f{i}": name for i, name in enumerate(names)})
        except self._db.exceptions.ConditionalCheckFailedException:
            pass

    async def active_jobs(self, status: str, page_size: int = 100) -> list[Job]:
        """Jobs in one active status, oldest first, through the sparse `status-index`: the cost follows the
        number of unfinished jobs, never the table."""
        jobs: list[Job] = []
        async for item in all_items(self._db, TableName=self._jobs, IndexName="status-index", Limit=page_size,
                                    KeyConditionExpression="#a = :s", ExpressionAttributeNames={"#a": ACTIVE_ATTRIBUTE},
                                    ExpressionAttributeValues={":s": {"S": status}}):
            jobs.append(Job.model_validate(_from_item(item)))
        return jobs

    async def set_secondary_status(self, job_id: str, value: str, at_ms: int | None = None) -> bool:
        """Record SageMaker's SecondaryStatus as of `at_ms` (its LastModifiedTime); False when it was already that,
        or a later one is recorded (events arrive out of order): only a change is an event, and never backwards."""
        names = {"#ss": "secondary_status"}
        values: dict[str, Any] = {":v": {"S": value}}
        update, condition = "SET #ss = :v", "attribute_exists(job_id) AND (attribute_not_exists(#ss) OR #ss <> :v)"
        if at_ms is not None:
            names["#at"] = "secondary_status_at"
            values[":t"] = {"N": str(at_ms)}
            update += ", #at = :t"
            condition += " AND (attribute_not_exists(#at) OR #at < :t)"
        try:
            await self._db.update_item(
                TableName=self._jobs, Key={"job_id": {"S": job_id}}, UpdateExpression=update,
                ConditionExpression=condition, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    async def advance_metrics(self, job_id: str, step: int, log_ts: int, **changes: Any) -> bool:
        """Move the job's metrics cursor forward to `step`; False when another poller already got there."""
        changes = {k: v for k, v in changes.items() if v is not None}
        names = {"#st": "metrics_step", "#ts": "metrics_log_ts", **{f"#f{i}": k for i, k in enumerate(changes)}}
        values = {":st": {"N": str(step)}, ":ts": {"N": str(log_ts)},
                  **{f":v{i}": _ser.serialize(v) for i, v in enumerate(changes.values())}}
        sets = ["#st = :st", "#ts = :ts", *(f"#f{i} = :v{i}" for i in range(len(changes)))]
        try:
            await self._db.update_item(
                TableName=self._jobs, Key={"job_id": {"S": job_id}}, UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(job_id) AND (attribute_not_exists(#st) OR #st < :st)",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
            return True
        except self._db.exceptions.ConditionalCheckFailedException:
            return False

    async def add_event(self, job_id: str, event: dict[str, Any]) -> None:
        # `data` is stored as JSON text (floats included, which DynamoDB's number type would refuse).
        item = to_item({**{k: v for k, v in event.items() if k != "data"}, "job_id": job_id, "event_id": event["id"]})
        if event.get("data") is not None:
            item["data"] = {"S": json.dumps(event["data"])}
        await self._db.put_item(TableName=self._events, Item=item)

    async def metrics_events(self, job_id: str, max_items: int = 100_000) -> list[dict[str, Any]]:
        """The data of the job's `metrics` events, oldest first (bounded: a runaway job cannot exhaust memory)."""
        kwargs: dict[str, Any] = {"TableName": self._events, "ScanIndexForward": True,
                                  "KeyConditionExpression": "job_id = :j", "FilterExpression": "#t = :m",
                                  "ExpressionAttributeNames": {"#t": "type"},
                                  "ExpressionAttributeValues": {":j": {"S": job_id}, ":m": {"S": "metrics"}}}
        found: list[dict[str, Any]] = []
        while len(found) < max_items:
            page = await self._db.query(**kwargs)
            for item in page.get("Items", []):
                if "data" in item:
                    found.append(json.loads(_de.deserialize(item["data"])))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:max_items]

    async def list_events(self, job_id: str, limit: int, after: str | None,
                          event_type: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Newest first; `event_type` ("message" or "metrics") keeps only that kind: a long run's one metrics
        event per step would otherwise push the job's story out of the first pages."""
        kwargs: dict[str, Any] = {"TableName": self._events, "ScanIndexForward": False,
                                  "KeyConditionExpression": "job_id = :j",
                                  "ExpressionAttributeValues": {":j": {"S": job_id}}}
        if event_type is not None:
            kwargs["ExpressionAttributeNames"] = {"#t": "type"}
            kwargs["ExpressionAttributeValues"][":t"] = {"S": event_type}
            kwargs["FilterExpression"] = ("attribute_not_exists(#t) OR #t = :t" if event_type == "message"
                                          else "#t = :t")
        if after:
            kwargs["ExclusiveStartKey"] = {"job_id": {"S": job_id}, "event_id": {"S": after}}
        items: list[dict[str, Any]] = []
        while len(items) <= limit:  # a filter applies after Limit: read on until the page is full
            page = await self._db.query(**kwargs, Limit=limit + 1 - len(items) if event_type is None else 200)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        events = []
        for item in items[:limit + 1]:
            values = {k: _de.deserialize(v) for k, v in item.items()}
            events.append({"id": values["event_id"], "object": "fine_tuning.job.event",
                           "created_at": int(values["created_at"]), "level": values["level"],
                           "message": values["message"], "type": values.get("type", "message"),
                           "data": json.loads(values["data"]) if "data" in values else None})
        return events[:limit], len(events) > limit

    async def all_for_user(self, user_id: str) -> list[Job]:
        jobs: list[Job] = []
        after: Job | None = None
        while True:
            page, more = await self.list_for_user(user_id, 100, after)
            jobs += page
            if not more:
                return jobs
            after = page[-1]

    async def delete_job(self, job_id: str) -> None:
        """The job and its events."""
        kwargs: dict[str, Any] = {"TableName": self._events, "KeyConditionExpression": "job_id = :j",
                                  "ProjectionExpression": "job_id, event_id",
                                  "ExpressionAttributeValues": {":j": {"S": job_id}}}
        while True:
            page = await self._db.query(**kwargs)
            keys = page.get("Items", [])
            for i in range(0, len(keys), 25):
                await self._db.batch_write_item(RequestItems={self._events: [
                    {"DeleteRequest": {"Key": key}} for key in keys[i:i + 25]]})
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        await self._db.delete_item(TableName=self._jobs, Key={"job_id": {"S": job_id}})

    async def delete_files_of(self, user_id: str) -> None:
        for item in await items_of_user(self._db, self._files, "user-index", user_id):
            await self._db.delete_item(TableName=self._files, Key={"file_id": item["file_id"]})

    async def get_file(self, file_id: str) -> FileView | None:
        item = (await self._db.get_item(TableName=self._files, Key={"file_id": {"S": file_id}},
                                        ConsistentRead=True)).get("Item")
        return FileView.model_validate(_from_item(item)) if item else None

    async def put_file(self, view: FileView) -> None:
        """Apply a file event to the projection unless a later state is already recorded."""
        item = to_item({**view.model_dump(), "rank": _STATUS_RANK[view.status]})
        try:
            await self._db.put_item(TableName=self._files, Item=item,
                                    ConditionExpression="attribute_not_exists(file_id) OR #r <= :r",
                                    ExpressionAttributeNames={"#r": "rank"},
                                    ExpressionAttributeValues={":r": {"N": str(_STATUS_RANK[view.status])}})
        except self._db.exceptions.ConditionalCheckFailedException:
            pass

    async def jobs_waiting_on_file(self, file_id: str, page_size: int = 100) -> list[Job]:
        """The jobs in validating_files that name this file (training or validation file): one Query of the sparse
        `status-index`, so the cost follows the jobs waiting for files, never the table."""
        jobs: list[Job] = []
        async for item in all_items(self._db, TableName=self._jobs, IndexName="status-index", Limit=page_size,
                                    KeyConditionExpression="#a = :s",
                                    FilterExpression="training_file = :f OR validation_file = :f",
                                    ExpressionAttributeNames={"#a": ACTIVE_ATTRIBUTE},
                                    ExpressionAttributeValues={":s": {"S": "validating_files"},
                                                               ":f": {"S": file_id}}):
            jobs.append(Job.model_validate(_from_item(item)))
        return jobs
