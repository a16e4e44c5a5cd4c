""""SageMaker Training Job State Change" events to EventBridge, sent in order by one background thread
so that no request and no job waits on EventBridge."""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.contracts import sagemaker_events

from .models import TrainingJob

log = logging.getLogger(__name__)

SOURCE = sagemaker_events.EVENTBRIDGE_SOURCE
DETAIL_TYPE = sagemaker_events.EVENTBRIDGE_DETAIL_TYPE


def state_change_entry(job: TrainingJob, bus: str) -> dict[str, Any]:
    return {"Source": SOURCE, "DetailType": DETAIL_TYPE, "Resources": [job.arn],
            "Detail": json.dumps(job.event_detail()), "EventBusName": bus}


class EventPublisher:
    def __init__(self, events: Any, bus: str) -> None:
        self._events, self._bus = events, bus
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="eventbridge", daemon=True)
        self._thread.start()

    def job_changed(self, job: TrainingJob) -> None:
        """Called with the store's lock held: only takes the snapshot, never waits."""
        self._queue.put(state_change_entry(job, self._bus))

    def close(self, timeout_s: float = 10) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while (entry := self._queue.get()) is not None:
            try:
                response = self._events.put_events(Entries=[entry])
            except (BotoCoreError, ClientError) as exc:
                log.warning("put_events failed", extra={"error": str(exc), "resources": entry["Resources"]})
                continue
            if response.get("FailedEntryCount"):
                log.warning("put_events rejected the event", extra={"entries": response.get("Entries")})
