"""Jobs written straight into the jobs table, in the shape `JobsStore.create` writes them."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import cycle, islice
from typing import Any

from services.training.models import Job
from services.training.store import to_item

BATCH = 25  # the most items one BatchWriteItem takes
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def job_item(user_id: str, created_at: datetime) -> dict[str, Any]:
    job = Job(job_id=f"ftjob-{uuid.uuid4().hex[:24]}", user_id=user_id,
              created_at=created_at.isoformat(timespec="microseconds"),
              created_at_unix=int(created_at.timestamp()),
              model="llm-tuner/tiny-chat", training_file="file-bench", seed=0, instance_type="ml.g5.xlarge",
              hyperparameters={"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"},
              status="succeeded")
    return to_item(job.model_dump())


def user_jobs(user_id: str, count: int) -> Iterator[dict[str, Any]]:
    """`count` jobs a minute apart."""
    for i in range(count):
        yield job_item(user_id, _EPOCH + timedelta(minutes=i))


def other_users_jobs(count: int, users: int = 1000, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` jobs spread over `users` other users and a year."""
    rng = random.Random(seed)
    for _ in range(count):
        yield job_item(f"user-bench-other-{rng.randrange(users)}",
                       _EPOCH + timedelta(seconds=rng.randrange(365 * 24 * 3600)))


def rewrites(items: list[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    """`count` puts of `items` over and over: as many writes as a large table's, into a table that stays
    the size of `items`. Any BATCH in a row are distinct, as BatchWriteItem needs, when there are that many."""
    if len(items) < BATCH:
        raise ValueError(f"rewrites need at least {BATCH} distinct items, got {len(items)}")
    return islice(cycle(items), count)


def _batches(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    while batch := list(islice(items, BATCH)):
        yield batch


def write(dynamodb: Any, table: str, items: Iterator[dict[str, Any]], threads: int = 4) -> float:
    """Write `items` with BatchWriteItem from `threads` threads; returns the seconds taken.

    boto3 clients are thread-safe; give `dynamodb` a connection pool of at least `threads`."""

    def put(batch: list[dict[str, Any]]) -> None:
        requests = {table: [{"PutRequest": {"Item": item}} for item in batch]}
        while requests:  # a real DynamoDB may hand back what it could not take yet
            requests = dynamodb.batch_write_item(RequestItems=requests)["UnprocessedItems"]

    started = time.perf_counter()
    batches = _batches(items)
    with ThreadPoolExecutor(threads) as pool:
        while window := list(islice(batches, threads * 4)):  # bounded: never all items in memory at once
            list(pool.map(put, window))
    return time.perf_counter() - started
