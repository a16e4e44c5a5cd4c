"""`make up`'s supervision: a process that exits is started again, after a delay that doubles while it keeps
failing, and the rest keep serving meanwhile. In AWS, ECS does this for each task.

The delay starts at `first_delay_s` and doubles up to `max_delay_s`; a process that then stays up for
`stable_after_s` is forgiven its past failures. Every exit and restart is logged with its exit status.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("supervisor")


@dataclass
class _Record:
    failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    restart_at: float | None = None


@dataclass
class Supervisor:
    restart: Callable[[str], object]  # starts the named process again
    exit_code: Callable[[str], int | None]  # a process's exit status; None while it runs
    names: Callable[[], list[str]]
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict)

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2 ** max(0, failures - 1)))

    def check(self) -> None:
        """One pass: notes exits, restarts what is due. Call it every second or so."""
        now = self.clock()
        for name in self.names():
            record = self._records.setdefault(name, _Record(started_at=now))
            if record.restart_at is not None:
                if now >= record.restart_at:
                    log.warning("restarting %s (restart %d)", name, record.failures)
                    try:
                        self.restart(name)
                    except Exception:
                        log.exception("%s could not be started; trying again later", name)
                        record.failures += 1
                        record.restart_at = now + self.delay(record.failures)
                        continue
                    record.restart_at, record.started_at = None, now
                continue
            code = self.exit_code(name)
            if code is None:
                if record.failures and now - record.started_at >= self.stable_after_s:
                    record.failures = 0
                continue
            record.failures += 1
            wait = self.delay(record.failures)
            log.warning("%s exited with status %s; restarting in %.0f s (failure %d in a row)", name, code, wait,
                        record.failures)
            record.restart_at = now + wait

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        while not stop.wait(interval_s):
            self.check()
