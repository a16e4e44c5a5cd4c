"""moto's server as the embedded AWS runs it, with DynamoDB's writes made atomic.

DynamoDB applies a conditional write atomically: of two concurrent puts with `attribute_not_exists`, one succeeds
and the other gets ConditionalCheckFailedException. moto's server handles each request on its own thread and
checks a condition, then writes, with nothing in between, so two concurrent writes can both pass the same
condition (seen: two registrations of one email both answered 201 on a loaded machine). Every service relies on
those conditions (unique emails, status transitions, the inbox's once-only handling), so here each DynamoDB write
(put, update, delete, transactions) holds one lock for the whole check-and-write. Reads are not locked.

    python -m deploy.local.embedded_aws -H 127.0.0.1 -p 4566      (moto.server's own options)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
WRITE_LOCK = threading.RLock()  # re-entrant: a transaction's writes go through the single-item methods


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with WRITE_LOCK:
            return method(*args, **kwargs)

    locked.__dict__["atomic"] = True
    return locked


def make_dynamodb_writes_atomic() -> None:
    for name in WRITES:
        method = getattr(DynamoDBBackend, name)
        if not getattr(method, "atomic", False):
            setattr(DynamoDBBackend, name, _atomic(method))


def main() -> None:
    from moto.server import main as moto_main

    make_dynamodb_writes_atomic()
    moto_main()


if __name__ == "__main__":
    main()
