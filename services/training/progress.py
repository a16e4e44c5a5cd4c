"""What the job page reads while a job runs (GET /api/jobs/{id}/metrics and /logs): its metrics history (the loss
chart after a reload) and the tail of its training log. (Turning log lines into those metrics is
metrics_from_logs.py's; the results CSV of a finished job is results_file.py's.)

The history is the job's `type: "metrics"` events (metrics_from_logs.py writes one per trainer step),
read in step order; a very long run is thinned to at most `MAX_POINTS` evenly spread points, always keeping
the last. The log tail reads the job's CloudWatch log streams (`/aws/sagemaker/TrainingJobs`, streams named
`{job}/...`), newest events last.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from services.training.deps import Deps, Logs
from services.training.models import Job

MAX_POINTS = 2_000
MAX_LOG_LINES = 1_000


def thin(points: list[dict[str, Any]], limit: int = MAX_POINTS) -> list[dict[str, Any]]:
    if len(points) <= limit:
        return points
    stride = len(points) / (limit - 1)
    kept = [points[int(i * stride)] for i in range(limit - 1)]
    return [*kept, points[-1]]


async def metrics_history(job: Job, deps: Deps) -> dict[str, Any]:
    """`{object: "list", data: [{step, train_loss, valid_loss?, ...}]}` in step order, one point per step."""
    by_step: dict[int, dict[str, Any]] = {}
    for data in await deps.jobs.metrics_events(job.job_id):
        step = data.get("step")
        if isinstance(step, int) and not isinstance(step, bool):
            by_step[step] = data
    points = [by_step[step] for step in sorted(by_step)]
    return {"object": "list", "data": thin(points), "total_points": len(points)}


async def log_tail(job: Job, logs: Logs, log_group: str, limit: int) -> dict[str, Any]:
    """The last `limit` lines of the job's training log, oldest first: `{timestamp (ms), message, host}` (host: the
    instance that printed it, algo-1 ... algo-N; a job on several instances has a stream each)."""
    try:
        streams = (await logs.describe_log_streams(logGroupName=log_group,
                                                   logStreamNamePrefix=job.job_id)).get("logStreams", [])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return {"object": "list", "data": [], "truncated": False}
        raise
    lines: list[dict[str, Any]] = []
    truncated = False
    for stream in streams[-8:]:  # each attempt (spot restarts) and each instance has a stream; the latest matter
        page = await logs.get_log_events(logGroupName=log_group, logStreamName=stream["logStreamName"],
                                         startFromHead=False, limit=min(limit, 10_000))
        host = stream_host(stream["logStreamName"])
        lines += [{"timestamp": int(e["timestamp"]), "message": str(e.get("message", "")), "host": host}
                  for e in page.get("events", [])]
    lines.sort(key=lambda line: line["timestamp"])
    if len(lines) > limit:
        lines, truncated = lines[-limit:], True
    return {"object": "list", "data": lines, "truncated": truncated}


def stream_host(stream_name: str) -> str | None:
    """`{job}/algo-2-1733150000` (SageMaker's training log stream names) -> "algo-2"."""
    _, _, tail = stream_name.partition("/")
    host, _, started = tail.rpartition("-")
    return host if host and started.isdigit() else None
