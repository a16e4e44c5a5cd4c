"""The training service's unit-test world: in-memory fakes of every protocol in services/training/deps.py, the
`Fakes` that holds one of each (typed as themselves, so a test reads what they recorded) and builds the `Deps`
handlers take, and the steps of a job's life as one-line calls (create, project a file, launch, a SageMaker
state change)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from services.training import commands, file_projection, launch, transitions
from services.training.catalog import Catalog
from services.training.deps import Deps, LaunchConfig, QuotaChecks
from services.training.models import AT_REST, CreateJob, FileView, Job, JobStatus
from services.training.parts import ended_parts
from services.training.sagemaker_state import on_sagemaker_state
from services.training.settings import Settings
from services.training.source_bundle import SourceBundle
from shared.contracts.files_events import FileEvent, FileRejected, FileValidated
from shared.contracts.sagemaker_events import TrainingJobStateChanged
from shared.contracts.training_events import LaunchRequested
from shared.envelope import MemoryCommandQueue, MemoryPublisher

T = TypeVar("T")
CATALOG = Catalog.load(Settings().catalog_file)
TINY = "llm-tuner/tiny-chat"
_RANK = {"uploaded": 0, "processed": 1, "error": 1, "deleted": 2}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class FakeJobsStore:
    """store.JobsStore in memory: status moves honour transitions.py as the real conditional write does, and the
    files projection never goes back a state."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, FileView] = {}
        self.secondary_at: dict[str, int] = {}

    async def create(self, job: Job) -> None:
        assert job.job_id not in self.jobs
        self.jobs[job.job_id] = job.model_copy(deep=True)

    async def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return job.model_copy(deep=True) if job else None

    async def list_for_user(self, user_id: str, limit: int, after: Job | None) -> tuple[list[Job], bool]:
        mine = sorted((j for j in self.jobs.values() if j.user_id == user_id), key=lambda j: j.created_at,
                      reverse=True)
        if after:
            mine = [j for j in mine if j.created_at < after.created_at]
        return mine[:limit], len(mine) > limit

    async def all_for_user(self, user_id: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.user_id == user_id]

    async def active_jobs(self, status: str, page_size: int = 100) -> list[Job]:
        return [j for j in self.jobs.values() if j.status == status]

    async def transition(self, job_id: str, to: JobStatus, *, only_from: JobStatus | None = None,
                         bill_micros: int | None = None, billed_seconds: int | None = None,
                         **changes: Any) -> bool:
        job = self.jobs[job_id]
        if job.status not in transitions.expected(to, only_from):
            return False
        if to in AT_REST and job.status not in AT_REST:  # as the store: the current part ends, its bill added
            if bill_micros is not None:
                changes["billed_micros"] = (job.billed_micros or 0) + bill_micros
            if job.parts and not job.parts[-1].get("outcome"):
                changes["parts"] = ended_parts(job.parts, to, bill_micros, billed_seconds)
        self.jobs[job_id] = job.model_copy(update={"status": to, **{k: v for k, v in changes.items() if v is not None}})
        return True

    async def reactivate(self, job: Job, to: JobStatus, usage: Any, rules: Any, **changes: Any) -> bool:
        return await self.transition(job.job_id, to, only_from=job.status, **changes)

    async def clear_fields(self, job_id: str, *names: str) -> None:
        await self.set_fields(job_id, **dict.fromkeys(names))

    async def set_fields(self, job_id: str, **changes: Any) -> None:
        self.jobs[job_id] = self.jobs[job_id].model_copy(update=changes)

    async def set_secondary_status(self, job_id: str, value: str, at_ms: int | None = None) -> bool:
        if job_id not in self.jobs or self.jobs[job_id].secondary_status == value:
            return False
        if at_ms is not None and at_ms <= self.secondary_at.get(job_id, -1):
            return False
        if at_ms is not None:
            self.secondary_at[job_id] = at_ms
        await self.set_fields(job_id, secondary_status=value)
        return True

    async def advance_metrics(self, job_id: str, step: int, log_ts: int, **changes: Any) -> bool:
        job = self.jobs[job_id]
        if job.metrics_step is not None and job.metrics_step >= step:
            return False
        await self.set_fields(job_id, metrics_step=step, metrics_log_ts=log_ts,
                              **{k: v for k, v in changes.items() if v is not None})
        return True

    async def add_event(self, job_id: str, event: dict[str, Any]) -> None:
        self.events.setdefault(job_id, []).append(event)

    async def list_events(self, job_id: str, limit: int, after: str | None,
                          event_type: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        events = [e for e in reversed(self.events.get(job_id, [])) if event_type in (None, e.get("type"))]
        return events[:limit], len(events) > limit

    async def metrics_events(self, job_id: str, max_items: int = 100_000) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events.get(job_id, []) if e.get("type") == "metrics"][:max_items]

    async def delete_job(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.events.pop(job_id, None)

    async def get_file(self, file_id: str) -> FileView | None:
        return self.files.get(file_id)

    async def put_file(self, view: FileView) -> None:
        known = self.files.get(view.file_id)
        if known is None or _RANK[known.status] <= _RANK[view.status]:
            self.files[view.file_id] = view

    async def jobs_waiting_on_file(self, file_id: str) -> list[Job]:
        return [j for j in self.jobs.values()
                if j.status == "validating_files" and file_id in (j.training_file, j.validation_file)]

    async def delete_files_of(self, user_id: str) -> None:
        for file_id in [f for f, view in self.files.items() if view.user_id == user_id]:
            del self.files[file_id]


class FakeSageMaker:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        self.over: set[str] = set()  # jobs SageMaker has already finished

    async def create_training_job(self, **request: Any) -> dict[str, Any]:
        if any(r["TrainingJobName"] == request["TrainingJobName"] for r in self.created):
            raise ClientError({"Error": {"Code": "ResourceInUse", "Message": "exists"}}, "CreateTrainingJob")
        self.created.append(request)
        return {"TrainingJobArn": "arn:x"}

    async def stop_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        if TrainingJobName not in {r["TrainingJobName"] for r in self.created} or TrainingJobName in self.over:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "not found"}}, "StopTrainingJob")
        self.stopped.append(TrainingJobName)
        return {}

    async def describe_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "ValidationException", "Message": "Requested resource not found"}},
                          "DescribeTrainingJob")


class FakeS3:
    """Objects in memory; a missing key answers as S3 does. Reading an archive back is the integration tests'."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts: list[dict[str, Any]] = []
        self.heads = 0

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **extra: Any) -> dict[str, Any]:
        self.objects[Bucket, Key] = Body
        self.puts.append({"Bucket": Bucket, "Key": Key, **extra})
        return {}

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        self.heads += 1
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ContentLength": len(self.objects[Bucket, Key])}

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        raise NotImplementedError("the unit tests never read back an archive")

    def get_paginator(self, operation_name: str) -> Any:
        """list_objects_v2's, over the objects in memory: one page."""
        assert operation_name == "list_objects_v2"
        objects = self.objects

        class Paginator:
            async def paginate(self, *, Bucket: str, Prefix: str = "") -> Any:
                yield {"Contents": [{"Key": key, "Size": len(body), "LastModified": datetime.now(UTC)}
                                    for (bucket, key), body in sorted(objects.items())
                                    if bucket == Bucket and key.startswith(Prefix)]}

        return Paginator()

    async def generate_presigned_url(self, ClientMethod: str, Params: dict[str, Any], ExpiresIn: int) -> str:
        return f"https://s3.example/{Params['Bucket']}/{Params['Key']}?expires={ExpiresIn}"


class FakeLogs:
    """A log group with no streams: no METRICS lines, an empty log tail."""

    async def describe_log_streams(self, *, logGroupName: str, logStreamNamePrefix: str) -> dict[str, Any]:
        return {"logStreams": []}

    async def filter_log_events(self, **request: Any) -> dict[str, Any]:
        return {"events": []}

    async def get_log_events(self, *, logGroupName: str, logStreamName: str, startFromHead: bool,
                             limit: int) -> dict[str, Any]:
        return {"events": []}


class FakeThroughput:
    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], tuple[float, int]] = {}

    async def record(self, model: str, instance_type: str, seconds: float, tokens: int) -> None:
        s, t = self.totals.get((model, instance_type), (0.0, 0))
        self.totals[model, instance_type] = (s + seconds, t + tokens)

    async def seconds_per_token(self, model: str, instance_type: str) -> float | None:
        s, t = self.totals.get((model, instance_type), (0.0, 0))
        return s / t if t else None


def launch_config(**overrides: Any) -> LaunchConfig:
    values: dict[str, Any] = {"bucket": "b", "role_arn": "arn:role", "image_uri": "img",
                              "instance_type": "ml.m5.large", "max_runtime_s": 3600, **overrides}
    return LaunchConfig(**values)


@dataclass
class Fakes:
    """One fake per dependency, named as in Deps; `deps` is what the handlers get."""

    launch: LaunchConfig = field(default_factory=launch_config)
    jobs: FakeJobsStore = field(default_factory=FakeJobsStore)
    events: MemoryPublisher = field(default_factory=MemoryPublisher)
    commands: MemoryCommandQueue = field(default_factory=MemoryCommandQueue)
    sagemaker: FakeSageMaker = field(default_factory=FakeSageMaker)
    s3: FakeS3 = field(default_factory=FakeS3)
    logs: FakeLogs = field(default_factory=FakeLogs)
    throughput: FakeThroughput = field(default_factory=FakeThroughput)
    sources: SourceBundle = field(default_factory=SourceBundle)
    quotas: QuotaChecks | None = None
    catalog: Catalog = field(default_factory=lambda: CATALOG)

    @property
    def deps(self) -> Deps:
        return Deps(jobs=self.jobs, catalog=self.catalog, events=self.events, commands=self.commands,
                    sagemaker=self.sagemaker, s3=self.s3, logs=self.logs, throughput=self.throughput,
                    sources=self.sources, launch=self.launch, quotas=self.quotas)

    def job(self, job_id: str) -> Job:
        """The job as stored now."""
        return self.jobs.jobs[job_id]

    def messages(self, job: Job) -> list[str]:
        return [e["message"] for e in self.jobs.events[job.job_id]]


# ---- a job's life, one step a call --------------------------------------------------------------------------

def file_view(status: str = "processed", user: str = "u1", file_id: str = "file-1", examples: int | None = 20,
              **extra: Any) -> FileView:
    error = "Line 2 is not valid JSON" if status == "error" else None
    return FileView.model_validate({"file_id": file_id, "user_id": user, "status": status, "purpose": "fine-tune",
                                    "s3_uri": f"s3://b/files/{user}/{file_id}", "examples": examples,
                                    "error": error, **extra})


def put_file(fakes: Fakes, status: str = "processed", user: str = "u1", file_id: str = "file-1",
             examples: int | None = 20, **extra: Any) -> None:
    """The projection already knows the file (as if its events had been handled before)."""
    run(fakes.jobs.put_file(file_view(status, user, file_id, examples, **extra)))


def file_event(kind: type[FileEvent], user: str = "u1", file_id: str = "file-1", examples: int = 20,
               **extra: Any) -> FileEvent:
    """files' event of that kind about one fine-tune file."""
    fields: dict[str, Any] = {"file_id": file_id, "user_id": user, "purpose": "fine-tune", "filename": "t.jsonl",
                              "bytes": 100, "s3_uri": f"s3://b/files/{user}/{file_id}", **extra}
    if kind in (FileValidated, FileRejected):
        fields.setdefault("examples", examples)
    if kind is FileRejected:
        fields.setdefault("error", "Line 2 is not valid JSON")
    return kind.model_validate(fields)


def project(fakes: Fakes, event: FileEvent) -> None:
    """training's worker handles a file event (the projection, and waking the launches waiting on the file)."""
    run(file_projection.project_file(event, fakes.deps))


def create(fakes: Fakes, user: str = "u1", **body: Any) -> Job:
    cmd = CreateJob.model_validate({"model": TINY, "training_file": "file-1", **body})
    return run(commands.create_job(cmd, user, fakes.deps))


def launch_job(fakes: Fakes, job: Job) -> None:
    run(launch.launch_job(LaunchRequested(job_id=job.job_id), fakes.deps))


def relaunch_woken(fakes: Fakes) -> list[str]:
    """Run every launch command sent since the last call (create's, and the files projection's wake-ups)."""
    sent, fakes.commands.sent[:] = list(fakes.commands.sent), []
    for envelope in sent:
        run(launch.launch_job(LaunchRequested.model_validate(envelope.data), fakes.deps))
    return [str(e.data["job_id"]) for e in sent]


def sagemaker_state(fakes: Fakes, job: Job, status: str, **detail: Any) -> None:
    """SageMaker's state-change event about the job, as EventBridge delivers it."""
    name = detail.pop("TrainingJobName", None) or fakes.job(job.job_id).training_job_name()  # its current part
    state = TrainingJobStateChanged.model_validate({"TrainingJobName": name, "TrainingJobStatus": status, **detail})
    run(on_sagemaker_state(state, fakes.deps))
