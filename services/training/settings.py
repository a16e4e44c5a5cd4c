from __future__ import annotations

from pathlib import Path

from pydantic import Field

from deploy import resources
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

    model_config = ServiceSettings.model_config | {"populate_by_name": True}
