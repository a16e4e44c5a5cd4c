"""Training jobs in memory, each also kept as `<workdir>/<job>/job.json` so a restart still knows them.

Every status change is persisted first and then handed to `on_change` (the EventBridge publisher), under
the store's lock, so events leave in the order the changes happened.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import JobNotFound, ResourceInUse
from .models import FAILED, TrainingJob, now

log = logging.getLogger(__name__)

JOB_FILE = "job.json"


class JobStore:
    def __init__(self, workdir: Path, on_change: Callable[[TrainingJob], None]) -> None:
        self.workdir = workdir
        self._on_change = on_change
        self._jobs: dict[str, TrainingJob] = {}
        self._lock = threading.RLock()

    def job_dir(self, name: str) -> Path:
        return self.workdir / name

    def load(self, interrupted_reason: str) -> None:
        """Read the jobs a previous run left; one that was still running then can only have failed."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.workdir.glob(f"*/{JOB_FILE}")):
            try:
                job = TrainingJob.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("skipping unreadable job record", extra={"path": str(path), "error": str(exc)})
                continue
            self._jobs[job.name] = job
            if not job.is_terminal:
                self.move_to(job.name, FAILED, FAILED, interrupted_reason, failure_reason=interrupted_reason)
        log.info("loaded jobs", extra={"count": len(self._jobs), "workdir": str(self.workdir)})

    def add(self, job: TrainingJob) -> None:
        with self._lock:
            if job.name in self._jobs:
                raise ResourceInUse(
                    "Training job names must be unique within an AWS account and region, and a training "
                    f"job with this name already exists ({self._jobs[job.name].arn})")
            self._jobs[job.name] = job
            self._persist(job)
            self._on_change(job)

    @contextmanager
    def reading(self, name: str) -> Iterator[TrainingJob]:
        """The live record under the lock, for building a response from a consistent state."""
        with self._lock:
            job = self._jobs.get(name)
            if job is None:
                raise JobNotFound(name)
            yield job

    def snapshot(self) -> list[TrainingJob]:
        with self._lock:
            return [TrainingJob.from_json(job.to_json()) for job in self._jobs.values()]

    def move_to(self, name: str, status: str, secondary: str, message: str, **changes: Any) -> TrainingJob:
        """Change the status (and the given fields with it), persist, then announce the change."""
        with self._lock, self.reading(name) as job:
            for key, value in changes.items():
                setattr(job, key, value)
            if job.move_to(status, secondary, message, now()):
                log.info("job status", extra={"job": name, "status": status, "secondary_status": secondary})
                self._persist(job)
                self._on_change(job)
            elif changes:
                self._persist(job)
            return job

    def update(self, name: str, persist: bool = True, **changes: Any) -> None:
        """Change fields that are no status change (metrics, tags): no event."""
        with self._lock, self.reading(name) as job:
            for key, value in changes.items():
                setattr(job, key, value)
            if persist:
                self._persist(job)

    def record_metrics(self, name: str, values: dict[str, float]) -> None:
        at = now()
        with self._lock, self.reading(name) as job:
            for metric, value in values.items():
                job.record_metric(metric, value, at)

    def _persist(self, job: TrainingJob) -> None:
        directory = self.job_dir(job.name)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{JOB_FILE}.tmp"
        tmp.write_text(json.dumps(job.to_json(), indent=1))
        os.replace(tmp, directory / JOB_FILE)
