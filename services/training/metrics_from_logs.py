"""Live training metrics: the trainer's `METRICS {json}` lines, read from the job's CloudWatch log streams
(`/aws/sagemaker/TrainingJobs`, streams named `{job name}/...`), become job events (`type: "metrics"`, as
OpenAI's) and `training.job.metrics` events on training's topic (live charts), and move the job's
`estimated_finish` and `trained_tokens` on.

Incremental and idempotent: the job item keeps the last step seen (`metrics_step`) and the log timestamp it was
read at (`metrics_log_ts`); each poll reads from that timestamp on and keeps only later steps. A metrics event's
id is made from its log timestamp and step, so writing it twice writes the same item; the cursor only moves
forward by a conditional write, and only the poller that moved it publishes to the topic.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from services.training.deps import Deps, Logs
from services.training.models import Job
from shared.contracts.training_events import JobMetrics
from shared.envelope import new_event

log = logging.getLogger(__name__)

PREFIX = "METRICS "


@dataclass(frozen=True)
class MetricsLine:
    record: dict[str, Any]  # step, train_loss, valid_loss?, total_steps?, trained_tokens?, ...
    log_ts: int  # the log event's timestamp, epoch milliseconds

    @property
    def step(self) -> int:
        return int(self.record["step"])


def parse_line(line: str) -> dict[str, Any] | None:
    """A trainer's `METRICS {json}` line as a record with an integer `step`; None for any other line."""
    text = line.strip()
    if not text.startswith(PREFIX):
        return None
    try:
        record = json.loads(text[len(PREFIX):])
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or step < 0 or step != int(step):
        return None
    clean: dict[str, Any] = {"step": int(step)}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
            continue  # only finite numbers: a chart's points
        if key in ("total_steps", "trained_tokens"):
            if value >= 0:
                clean[key] = int(value)
        else:
            clean[key] = value
    return clean


def message(record: dict[str, Any]) -> str:
    """OpenAI's wording: "Step 3/20: training loss=1.23, validation loss=1.40"."""
    total = record.get("total_steps")
    text = f"Step {record['step']}/{total}" if total else f"Step {record['step']}"
    parts = []
    if "train_loss" in record:
        parts.append(f"training loss={record['train_loss']:.4g}")
    if "valid_loss" in record:
        parts.append(f"validation loss={record['valid_loss']:.4g}")
    return f"{text}: {', '.join(parts)}" if parts else text


def estimated_finish(step: int, total_steps: int | None, started_at: float | None, now: float) -> int | None:
    """When training should end (unix seconds), from the pace so far: elapsed / step * steps left."""
    if not total_steps or started_at is None or step <= 0 or now <= started_at:
        return None
    if step >= total_steps:
        return int(now)
    per_step = (now - started_at) / step
    return int(now + per_step * (total_steps - step))


def event_data(record: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's metrics event data: step, train_loss, valid_loss, total_steps, and whatever else was logged."""
    data = dict(record)
    data.setdefault("total_steps", None)
    return data


async def read_lines(logs: Logs, log_group: str, job_name: str, since_ts: int | None,
                     max_pages: int = 20) -> list[MetricsLine]:
    """The job's METRICS lines logged at or after `since_ts` (ms), oldest first, across all its streams."""
    try:
        streams = [s["logStreamName"] for s in (await logs.describe_log_streams(
            logGroupName=log_group, logStreamNamePrefix=f"{job_name}/")).get("logStreams", [])]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return []
        raise
    if not streams:
        return []
    lines: list[MetricsLine] = []
    request: dict[str, Any] = {"logGroupName": log_group, "logStreamNames": streams[:100]}
    if since_ts is not None:
        request["startTime"] = since_ts
    for _ in range(max_pages):  # bounded: what is left is read by the next poll
        page = await logs.filter_log_events(**request)
        for event in page.get("events", []):
            record = parse_line(str(event.get("message", "")))
            if record is not None:
                lines.append(MetricsLine(record, int(event["timestamp"])))
        token = page.get("nextToken")
        if not token or not page.get("events"):
            break
        request["nextToken"] = token
    lines.sort(key=lambda m: (m.log_ts, m.step))
    return lines


def metrics_event_id(line: MetricsLine) -> str:
    # Sortable with job_events' ids (microseconds, then 6 characters), and the same for the same line every time.
    return f"ftevent-{line.log_ts * 1000:016d}{line.step % 16 ** 6:06x}"


async def poll(deps: Deps, job: Job, started_at: float | None = None,
               now: float | None = None) -> int:
    """Turn the job's new METRICS lines into events; how many steps were new."""
    lines = await read_lines(deps.logs, deps.log_group, job.training_job_name(), job.metrics_log_ts)
    last = job.metrics_step if job.metrics_step is not None else -1
    new: dict[int, MetricsLine] = {}
    for line in lines:
        if line.step > last:
            new[line.step] = line  # a step logged twice (a restarted stream): the later line
    if not new:
        return 0
    ordered = [new[step] for step in sorted(new)]
    for line in ordered:
        await deps.jobs.add_event(job.job_id, {"id": metrics_event_id(line), "created_at": line.log_ts // 1000,
                                               "level": "info", "message": message(line.record),
                                               "type": "metrics", "data": event_data(line.record)})
    newest = ordered[-1]
    total = next((m.record["total_steps"] for m in reversed(ordered) if m.record.get("total_steps")), None)
    tokens = next((m.record["trained_tokens"] for m in reversed(ordered) if "trained_tokens" in m.record), None)
    finish = estimated_finish(newest.step, total, started_at, time.time() if now is None else now)
    if not await deps.jobs.advance_metrics(job.job_id, newest.step, newest.log_ts, estimated_finish=finish,
                                           trained_tokens=tokens):
        return 0  # another poller moved the cursor first, and announces these steps
    for line in ordered:
        event = JobMetrics(job_id=job.job_id, user_id=job.user_id, model=job.base,
                           **{**event_data(line.record), "estimated_finish": finish})
        await deps.events.publish(new_event(event, user_id=job.user_id, correlation_id=job.correlation_id))
    log.info("metrics recorded", extra={"job_id": job.job_id, "steps": len(ordered), "step": newest.step})
    return len(ordered)
