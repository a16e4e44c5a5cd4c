from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from shared.contracts import resources
from shared.settings import ServiceSettings

HERE = Path(__file__).parent


class Settings(ServiceSettings):
    jobs_table: str = Field(resources.JOBS_TABLE, alias="DYNAMODB_JOBS_TABLE")
    job_events_table: str = Field(resources.JOB_EVENTS_TABLE, alias="DYNAMODB_JOB_EVENTS_TABLE")
    files_projection_table: str = Field(resources.TRAINING_FILES_TABLE, alias="DYNAMODB_TRAINING_FILES_TABLE")
    inbox_table: str = Field(resources.TRAINING_INBOX_TABLE, alias="TRAINING_INBOX_TABLE")
    throughput_table: str = Field(resources.TRAINING_THROUGHPUT_TABLE, alias="DYNAMODB_TRAINING_THROUGHPUT_TABLE")
    events_topic: str = Field(resources.TRAINING_TOPIC, alias="TRAINING_EVENTS_TOPIC")
    work_queue: str = Field(resources.TRAINING_QUEUE, alias="TRAINING_WORK_QUEUE")
    bucket: str = Field(resources.BUCKET, alias="S3_BUCKET_NAME")

    sagemaker_execution_role_arn: str = "arn:aws:iam::123456789012:role/SageMakerExecutionRole"
    trainer_image_uri: str = "llm-tuner/trainer:local"
    default_instance_type: str = "ml.m5.large"
    max_runtime_s: int = 24 * 3600
    s3_kms_key_id: str | None = None  # S3_KMS_KEY_ID: SSE-KMS for results and SageMaker's output, else SSE-S3
    catalog_file: Path = HERE / "catalog.json"
    # LAUNCH_MODE: image runs TRAINER_IMAGE_URI; script runs the catalog's framework image (framework_images) on
    # trainer_image/finetune.py, uploaded as sourcedir.tar.gz (services/training/launch.py).
    launch_mode: Literal["image", "script"] = "image"
    # HF_TOKEN_SECRET_ID: the Secrets Manager secret (name or ARN) holding a Hugging Face token, for gated
    # models; only the id reaches the job (the execution role needs secretsmanager:GetSecretValue on it).
    hf_token_secret_id: str | None = None
    # Service Quotas before GPU launches (quotas.py); off where the deployment has no such endpoint at all.
    check_quotas: bool = True
    # The reconciler (services/training/reconciler.py): how often it polls SageMaker and the log streams, and
    # how long a job may wait in validating_files/queued with no SageMaker job before its launch is re-sent.
    reconcile_interval_s: float = Field(30.0, gt=0, alias="TRAINING_RECONCILE_INTERVAL_S")
    # Running jobs' metrics are read this often between passes: the live loss chart's pace.
    metrics_interval_s: float = Field(5.0, gt=0, alias="TRAINING_METRICS_INTERVAL_S")
    reconcile_stuck_launch_s: float = Field(600.0, ge=0, alias="TRAINING_RECONCILE_STUCK_LAUNCH_S")
    metrics_log_group: str = "/aws/sagemaker/TrainingJobs"
    # Per-user limits (limits.py): active jobs at once (None: no limit), spend per calendar month in USD (None: no
    # limit), and the instance types jobs may use, comma-separated (empty: every type in the catalog).
    max_active_jobs_per_user: int | None = Field(3, ge=0, alias="MAX_ACTIVE_JOBS_PER_USER")
    monthly_spend_limit_usd: float | None = Field(None, ge=0, alias="MONTHLY_SPEND_LIMIT_USD")
    allowed_instance_types: str = Field("", alias="ALLOWED_INSTANCE_TYPES")
    @field_validator("max_active_jobs_per_user", "monthly_spend_limit_usd", mode="before")
    @classmethod
    def _none_is_no_limit(cls, value: object) -> object:
        """`MAX_ACTIVE_JOBS_PER_USER=` or `=none` (and the same for the spend): no limit."""
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    # The files service, asked about a file the projection has not heard of yet (files_directory.py); unset: the
    # job is accepted and its launch decides.
    files_url: str | None = Field(None, alias="FILES_URL")
    files_timeout_s: float = Field(5.0, gt=0, alias="FILES_TIMEOUT_S")

    model_config = ServiceSettings.model_config | {"populate_by_name": True}
