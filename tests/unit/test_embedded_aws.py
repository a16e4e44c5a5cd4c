"""The embedded AWS's DynamoDB writes are atomic (deploy/local/embedded_aws.py): a write holds the lock from its
condition check to its write, so a second write waits for it. Made deterministic with events: the first write
is held inside moto's method until the test lets it go, and the second must not have started by then."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from deploy.local import embedded_aws

DEADLINE_S = 10


def test_a_second_write_waits_until_the_first_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def put_item(_backend: Any, name: str) -> None:  # stands in for moto's check-then-write
        order.append(f"{name} starts")
        if name == "first":
            inside.set()
            assert release.wait(DEADLINE_S)
        order.append(f"{name} ends")

    monkeypatch.setattr(embedded_aws.DynamoDBBackend, "put_item", put_item)
    embedded_aws.make_dynamodb_writes_atomic()
    first = threading.Thread(target=embedded_aws.DynamoDBBackend.put_item, args=(None, "first"))
    first.start()
    assert inside.wait(DEADLINE_S)
    second = threading.Thread(target=embedded_aws.DynamoDBBackend.put_item, args=(None, "second"))
    second.start()
    second.join(timeout=0.2)  # a deliberate short wait: the second write must still be blocked on the lock
    assert second.is_alive() and order == ["first starts"]
    release.set()
    first.join(DEADLINE_S)
    second.join(DEADLINE_S)
    assert order == ["first starts", "first ends", "second starts", "second ends"]


def test_every_write_is_wrapped_once() -> None:
    embedded_aws.make_dynamodb_writes_atomic()
    embedded_aws.make_dynamodb_writes_atomic()
    for name in embedded_aws.WRITES:
        method = getattr(embedded_aws.DynamoDBBackend, name)
        assert method.atomic and not getattr(method.__wrapped__, "atomic", False)
