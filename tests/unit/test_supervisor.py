"""`make up` restarts a process that exits, with a delay that doubles while it keeps failing (deploy/local/
supervisor.py), and the rest keep running. The backoff is checked on a fake clock; the wiring with real processes
(a kill -9, a restart through Cluster.restart) on a real one."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from deploy.local.cluster import Cluster
from deploy.local.supervisor import Supervisor
from tests.support.polling import wait_for


class FakeProcesses:
    def __init__(self) -> None:
        self.codes: dict[str, int | None] = {"worker": None, "gateway": None}
        self.restarts: list[tuple[str, float]] = []
        self.now = 0.0

    def restart(self, name: str) -> None:
        self.restarts.append((name, self.now))
        self.codes[name] = None


def _supervisor(fake: FakeProcesses) -> Supervisor:
    return Supervisor(restart=fake.restart, exit_code=fake.codes.__getitem__, names=lambda: list(fake.codes),
                      first_delay_s=1, max_delay_s=8, stable_after_s=60, clock=lambda: fake.now)


def _fail_and_wait(fake: FakeProcesses, supervisor: Supervisor) -> float:
    """The worker exits now; returns how long until the supervisor started it again."""
    fake.codes["worker"], exited, count = 1, fake.now, len(fake.restarts)
    while len(fake.restarts) == count:
        supervisor.check()
        fake.now += 0.25
        assert fake.now - exited < 100
    return fake.restarts[-1][1] - exited


def test_the_delay_doubles_while_a_process_keeps_failing_and_resets_once_it_stays_up() -> None:
    fake = FakeProcesses()
    supervisor = _supervisor(fake)
    delays = [_fail_and_wait(fake, supervisor) for _ in range(5)]  # each time it exits at once after its restart
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped at max_delay_s
    assert {name for name, _ in fake.restarts} == {"worker"} and fake.codes["gateway"] is None
    stable_until = fake.now + 61
    while fake.now < stable_until:  # up for longer than stable_after_s: its past failures are forgiven
        supervisor.check()
        fake.now += 0.25
    assert _fail_and_wait(fake, supervisor) == 1.0


def test_a_killed_process_is_started_again_and_the_others_keep_running(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    cluster = Cluster(data_dir=tmp_path)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    worker = cluster._spawn("worker", sleeper, None)
    other = cluster._spawn("other", sleeper, None)
    stop = threading.Event()
    supervisor = cluster.supervisor(first_delay_s=0.1)
    thread = threading.Thread(target=supervisor.run, args=(stop, 0.05))
    caplog.set_level(logging.WARNING, logger="supervisor")
    thread.start()
    try:
        assert worker.popen is not None and other.popen is not None
        os.kill(worker.popen.pid, signal.SIGKILL)
        again = wait_for(lambda: cluster.process("worker"), lambda p: p is not worker and p.exit_code() is None,
                         "the worker started again")
        assert again.popen is not None and again.popen.pid != worker.popen.pid
        assert other.exit_code() is None and cluster.process("other") is other
        assert any("worker exited with status -9; restarting" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        thread.join(10)
        cluster.stop(grace_s=5)
