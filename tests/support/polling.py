"""Waiting for work a test cannot observe finishing (a server's cleanup, a background task): poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_INTERVAL_S = 0.1


def wait_for(probe: Callable[[], T], ok: Callable[[T], bool], what: str, timeout_s: float = 20) -> T:
    """Call `probe` until `ok` holds for its value (returned), or fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last seen: {value!r}")
        time.sleep(POLL_INTERVAL_S)  # between checks only: the deadline bounds the wait


def poll(check: Callable[[], bool], deadline_s: float = 15, what: str = "condition") -> None:
    """Return as soon as `check()` holds; fail the test when it still does not after `deadline_s`."""
    wait_for(check, bool, what, deadline_s)
