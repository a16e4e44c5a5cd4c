"""A job's (or a model server's) output, line by line, to CloudWatch Logs (batched) and to a local file."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
# put_log_events takes at most 10,000 events and 1,048,576 bytes (26 bytes overhead per event).
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1_048_576
EVENT_OVERHEAD_BYTES = 26
MAX_MESSAGE_BYTES = 256 * 1024 - EVENT_OVERHEAD_BYTES


def stream_name(job_name: str, host: str, started: float) -> str:
    return f"{job_name}/{host}-{int(started)}"


class JobLog:
    """Lines go to the local file at once and to CloudWatch every `flush_s`; `close()` flushes."""

    def __init__(self, logs: Any, stream: str, local_file: Path, flush_s: float, group: str = LOG_GROUP) -> None:
        self._logs, self.stream, self._flush_s, self.group = logs, stream, flush_s, group
        self._file = local_file.open("a", encoding="utf-8")
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._ensure_stream()
        self._flusher = threading.Thread(target=self._flush_periodically, name=f"logs-{stream}", daemon=True)
        self._flusher.start()

    def write(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()
        message = line.encode("utf-8")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore") or " "
        with self._lock:
            self._pending.append({"timestamp": int(time.time() * 1000), "message": message})

    def close(self) -> None:
        self._closed.set()
        self._flusher.join(timeout=self._flush_s + 5)
        self.flush()
        self._file.close()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for batch in _batches(pending):
            try:
                self._logs.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=batch)
            except (BotoCoreError, ClientError) as exc:  # the job goes on; its local file has every line
                log.warning("put_log_events failed", extra={"stream": self.stream, "error": str(exc),
                                                            "dropped": len(batch)})

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._flush_s):
            self.flush()

    def _ensure_stream(self) -> None:
        for create, kwargs in ((self._logs.create_log_group, {"logGroupName": self.group}),
                               (self._logs.create_log_stream, {"logGroupName": self.group,
                                                               "logStreamName": self.stream})):
            try:
                create(**kwargs)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                    raise


def _batches(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for event in events:
        event_size = len(event["message"].encode("utf-8")) + EVENT_OVERHEAD_BYTES
        if current and (len(current) >= MAX_BATCH_EVENTS or size + event_size > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(event)
        size += event_size
    if current:
        batches.append(current)
    return batches
