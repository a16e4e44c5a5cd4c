"""Builds inference's dependencies (deps.py) once, for the API, the worker and the reconciler alike."""

from __future__ import annotations

from services.inference.catalog import ServingCatalog
from services.inference.deps import Deps, ServingConfig
from services.inference.settings import Settings
from services.inference.stores import DeploymentsStore, EvaluationsStore, FilesStore, ModelsStore
from shared.aws import AwsClients
from shared.envelope import CommandQueue, Publisher
from shared.ratelimit import RateLimiter


async def build_deps(aws: AwsClients, settings: Settings) -> Deps:
    db = await aws.get("dynamodb")
    return Deps(
        models=ModelsStore(db, settings.models_table),
        deployments=DeploymentsStore(db, settings.deployments_table),
        evaluations=EvaluationsStore(db, settings.evaluations_table),
        files=FilesStore(db, settings.files_table),
        catalog=ServingCatalog.load(settings.serving_catalog_file),
        events=Publisher(await aws.get("sns"), await aws.topic_arn(settings.events_topic)),
        commands=CommandQueue(await aws.get("sqs"), await aws.queue_url(settings.work_queue)),
        sagemaker=await aws.get("sagemaker"),
        # An invocation may wait its turn in the container's queue for minutes: a read timeout that short
        # would make botocore send it again while the first is still being served (work done twice).
        runtime=await aws.get("sagemaker-runtime", read_timeout=settings.invocation_timeout_s,
                              retries={"mode": "standard", "max_attempts": 1},
                              max_pool_connections=settings.max_concurrent_invocations + 8),
        s3=await aws.get("s3"),
        limiter=RateLimiter(db, settings.rate_limits_table),
        config=ServingConfig(bucket=settings.bucket, role_arn=settings.serving_execution_role_arn,
                             image_uri=settings.serving_image_uri, hf_token_secret_id=settings.hf_token_secret_id,
                             deploy_on_demand=settings.deploy_on_demand, on_demand_wait_s=settings.on_demand_wait_s,
                             default_idle_minutes=settings.default_idle_minutes,
                             chat_requests_per_minute=settings.chat_requests_per_minute,
                             invocation_timeout_s=settings.invocation_timeout_s),
    )
