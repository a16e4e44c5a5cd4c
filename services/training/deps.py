"""What the training service's handlers depend on, as protocols with only the methods they use, and the `Deps`
that holds them. bootstrap.py wires the real ones (DynamoDB stores, SNS, SQS, the AWS clients); unit tests pass
the fakes of tests/support/training.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from services.training.catalog import Catalog
from services.training.files_directory import FileSeen
from services.training.limits import Limits, Usage
from services.training.models import FileView, Job, JobStatus
from services.training.quotas import QuotaCheck
from shared.envelope import CommandSender, EventPublisher


class Jobs(Protocol):
    """training's own records (store.JobsStore): the jobs, each status move a conditional write
    (transitions.py), their events, and the projection of the files they use."""

    async def create(self, job: Job) -> None: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list_for_user(self, user_id: str, limit: int, after: Job | None) -> tuple[list[Job], bool]: ...

    async def all_for_user(self, user_id: str) -> list[Job]: ...

    async def active_jobs(self, status: str, page_size: int = 100) -> list[Job]: ...

    async def transition(self, job_id: str, to: JobStatus, *, only_from: JobStatus | None = None,
                         bill_micros: int | None = None, billed_seconds: int | None = None,
                         **changes: Any) -> bool: ...

    async def reactivate(self, job: Job, to: JobStatus, usage: Any, rules: Any, **changes: Any) -> bool: ...

    async def set_fields(self, job_id: str, **changes: Any) -> None: ...

    async def clear_fields(self, job_id: str, *names: str) -> None: ...

    async def set_secondary_status(self, job_id: str, value: str, at_ms: int | None = None) -> bool: ...

    async def advance_metrics(self, job_id: str, step: int, log_ts: int, **changes: Any) -> bool: ...

    async def add_event(self, job_id: str, event: dict[str, Any]) -> None: ...

    async def list_events(self, job_id: str, limit: int, after: str | None,
                          event_type: str | None = None) -> tuple[list[dict[str, Any]], bool]: ...

    async def metrics_events(self, job_id: str, max_items: int = 100_000) -> list[dict[str, Any]]: ...

    async def delete_job(self, job_id: str) -> None: ...

    async def get_file(self, file_id: str) -> FileView | None: ...

    async def put_file(self, view: FileView) -> None: ...

    async def jobs_waiting_on_file(self, file_id: str) -> list[Job]: ...

    async def delete_files_of(self, user_id: str) -> None: ...


class UsageCounters(Protocol):
    """Each user's active jobs and spend (usage_store.UsageStore); a job is created through it, within limits."""

    async def usage(self, user_id: str) -> Usage: ...

    async def create_within(self, job: Job, rules: Limits) -> None: ...

    async def forget(self, user_id: str) -> None: ...


class DeletedJobs(Protocol):
    """A deleted account's jobs SageMaker may still write for (deleted_jobs.DeletedJobsStore)."""

    async def remember(self, user_id: str, job_ids: list[str]) -> None: ...

    async def stops_owed(self, user_id: str) -> list[str]: ...

    async def stops_done(self, user_id: str) -> None: ...

    async def owner_of(self, job_id: str) -> str | None: ...

    async def forget(self, job_id: str) -> None: ...


class Files(Protocol):
    """The files service's word on a file the projection has not heard of (files_directory.FilesDirectory)."""

    async def find(self, file_id: str, bearer_token: str) -> FileSeen | None: ...


class Throughput(Protocol):
    """Measured training speed per (model, instance type) (throughput.ThroughputStore)."""

    async def record(self, model: str, instance_type: str, seconds: float, tokens: int) -> None: ...

    async def seconds_per_token(self, model: str, instance_type: str) -> float | None: ...


class QuotaChecks(Protocol):
    """SageMaker's training quota for an instance type (quotas.QuotaChecker)."""

    async def check(self, instance_type: str, spot: bool = False, count: int = 1) -> QuotaCheck: ...


class SourceUploader(Protocol):
    """Script mode's trainer source, in the bucket once per content (source_bundle.SourceBundle); its S3 URI."""

    async def ensure_uploaded(self, s3: S3, bucket: str, kms_key_id: str | None) -> str: ...


class SageMaker(Protocol):
    async def create_training_job(self, **request: Any) -> Any: ...

    async def stop_training_job(self, *, TrainingJobName: str) -> Any: ...

    async def describe_training_job(self, *, TrainingJobName: str) -> Any: ...


class S3(Protocol):
    """What training reads and writes in the bucket: results, the trainer's source, checkpoints, download links
    (and, through shared.s3, a deleted user's objects)."""

    async def put_object(self, *, Bucket: str, Key: str, Body: bytes, **extra: Any) -> Any: ...

    async def get_object(self, *, Bucket: str, Key: str) -> Any: ...

    async def head_object(self, *, Bucket: str, Key: str) -> Any: ...

    def get_paginator(self, operation_name: str) -> Any: ...

    async def generate_presigned_url(self, ClientMethod: str, Params: dict[str, Any], ExpiresIn: int) -> str: ...


class Logs(Protocol):
    """CloudWatch Logs: a job's METRICS lines and the job page's log tail."""

    async def describe_log_streams(self, *, logGroupName: str, logStreamNamePrefix: str) -> Any: ...

    async def filter_log_events(self, **request: Any) -> Any: ...

    async def get_log_events(self, *, logGroupName: str, logStreamName: str, startFromHead: bool,
                             limit: int) -> Any: ...


@dataclass
class LaunchConfig:
    bucket: str
    role_arn: str
    image_uri: str
    instance_type: str
    max_runtime_s: int
    kms_key_id: str | None = None  # S3_KMS_KEY_ID: SSE-KMS for what training writes, else SSE-S3
    launch_mode: str = "image"  # LAUNCH_MODE: image (image_uri) or script (framework image + our source)
    region: str = "us-east-1"  # script mode's framework image and sagemaker_region
    hf_token_secret_id: str | None = None  # HF_TOKEN_SECRET_ID: the secret the trainer reads for gated models


@dataclass
class Deps:
    jobs: Jobs
    catalog: Catalog
    events: EventPublisher
    commands: CommandSender
    sagemaker: SageMaker
    s3: S3
    logs: Logs  # the job's log streams: its metrics, and the job page's log tail
    throughput: Throughput  # measured speed per (model, instance type), for estimates
    sources: SourceUploader  # script mode's sourcedir.tar.gz
    launch: LaunchConfig
    quotas: QuotaChecks | None = None  # GPU launches check the training quota first; None skips the check
    log_group: str = "/aws/sagemaker/TrainingJobs"
    limits: Limits = field(default_factory=Limits)
    # None where a test's world has no such part: no counters (jobs created without limits), no notes of deleted
    # jobs, no files service to ask (an unknown file waits for the launch's decision).
    usage: UsageCounters | None = None
    deleted_jobs: DeletedJobs | None = None
    files: Files | None = None
