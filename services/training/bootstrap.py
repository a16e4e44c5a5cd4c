"""Builds the training service's dependencies (deps.py) once, for the API, the worker and the reconciler alike."""

from __future__ import annotations

from services.training.catalog import Catalog
from services.training.deleted_jobs import DeletedJobsStore
from services.training.deps import Deps, LaunchConfig
from services.training.files_directory import FilesDirectory
from services.training.limits import Limits, parse_instance_types
from services.training.quotas import QuotaChecker
from services.training.settings import Settings
from services.training.source_bundle import SourceBundle
from services.training.store import JobsStore
from services.training.throughput import ThroughputStore
from services.training.usage_store import UsageStore
from shared.aws import AwsClients
from shared.envelope import CommandQueue, Publisher


async def build_deps(aws: AwsClients, settings: Settings) -> Deps:
    catalog = Catalog.load(settings.catalog_file)
    limits = Limits(max_active_jobs=settings.max_active_jobs_per_user,
                    monthly_spend_limit_usd=settings.monthly_spend_limit_usd,
                    allowed_instance_types=parse_instance_types(settings.allowed_instance_types, catalog))
    return Deps(
        jobs=JobsStore(await aws.get("dynamodb"), settings.jobs_table, settings.job_events_table,
                       settings.files_projection_table),
        catalog=catalog,
        events=Publisher(await aws.get("sns"), await aws.topic_arn(settings.events_topic)),
        commands=CommandQueue(await aws.get("sqs"), await aws.queue_url(settings.work_queue)),
        sagemaker=await aws.get("sagemaker"),
        s3=await aws.get("s3"),
        logs=await aws.get("logs"),
        throughput=ThroughputStore(await aws.get("dynamodb"), settings.throughput_table),
        sources=SourceBundle(),
        launch=LaunchConfig(bucket=settings.bucket, role_arn=settings.sagemaker_execution_role_arn,
                            image_uri=settings.trainer_image_uri, instance_type=settings.default_instance_type,
                            max_runtime_s=settings.max_runtime_s, kms_key_id=settings.s3_kms_key_id,
                            launch_mode=settings.launch_mode, region=settings.aws_default_region,
                            hf_token_secret_id=settings.hf_token_secret_id),
        quotas=QuotaChecker(await aws.get("service-quotas")) if settings.check_quotas else None,
        log_group=settings.metrics_log_group,
        limits=limits,
        usage=UsageStore(await aws.get("dynamodb"), settings.jobs_table),
        deleted_jobs=DeletedJobsStore(await aws.get("dynamodb"), settings.jobs_table),
        files=FilesDirectory(settings.files_url, settings.files_timeout_s) if settings.files_url else None,
    )
