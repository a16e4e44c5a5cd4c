"""Waiting for work a test cannot observe finishing (a server's cleanup, a background task): poll with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_INTERVAL_S = 0.1


def poll(check: Callable[[], bool], deadline_s: float = 15, what: str = "condition") -> None:
    """Return as soon as `check()` holds; fail the test when it still does not after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached within {deadline_s}s"
        time.sleep(POLL_INTERVAL_S)  # between checks only: the deadline bounds the wait
