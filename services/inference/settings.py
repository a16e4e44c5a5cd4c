from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.body_limit import chat_routes
from shared.contracts import resources
from shared.settings import ServiceSettings

HERE = Path(__file__).parent


class Settings(ServiceSettings):
    models_table: str = Field(resources.INFERENCE_MODELS_TABLE, alias="DYNAMODB_INFERENCE_MODELS_TABLE")
    deployments_table: str = Field(resources.INFERENCE_DEPLOYMENTS_TABLE, alias="DYNAMODB_DEPLOYMENTS_TABLE")
    evaluations_table: str = Field(resources.INFERENCE_EVALUATIONS_TABLE, alias="DYNAMODB_EVALUATIONS_TABLE")
    rate_limits_table: str = Field(resources.INFERENCE_RATE_LIMITS_TABLE, alias="DYNAMODB_INFERENCE_RATE_LIMITS_TABLE")
    files_table: str = Field(resources.INFERENCE_FILES_TABLE, alias="DYNAMODB_INFERENCE_FILES_TABLE")
    inbox_table: str = Field(resources.INFERENCE_INBOX_TABLE, alias="INFERENCE_INBOX_TABLE")
    events_topic: str = Field(resources.INFERENCE_TOPIC, alias="INFERENCE_EVENTS_TOPIC")
    work_queue: str = Field(resources.INFERENCE_QUEUE, alias="INFERENCE_WORK_QUEUE")
    bucket: str = Field(resources.BUCKET, alias="S3_BUCKET_NAME")

    # The role SageMaker endpoints run as (reads base models and adapters in the bucket, pulls the serving image).
    serving_execution_role_arn: str = Field("arn:aws:iam::123456789012:role/SageMakerServingRole",
                                            alias="SERVING_EXECUTION_ROLE_ARN")
    # The serving container (README: why LMI with vLLM). Locally the emulator runs its own CPU server instead.
    serving_image_uri: str = Field("763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.33.0-lmi15.0.0-cu128",
                                   alias="SERVING_IMAGE_URI")
    serving_catalog_file: Path = Field(HERE / "serving_catalog.json", alias="SERVING_CATALOG_FILE")
    # HF_TOKEN_SECRET_ID: as training's, for gated base models (the serving role reads it at container start).
    hf_token_secret_id: str | None = None
    # A chat (or an evaluation) on a model with no deployment starts one and waits for it (the local cluster);
    # off, it answers 409 model_not_deployed (AWS: an endpoint costs money, so deploying is the user's choice).
    deploy_on_demand: bool = Field(False, alias="DEPLOY_ON_DEMAND")
    on_demand_wait_s: float = Field(300.0, gt=0, alias="DEPLOY_ON_DEMAND_WAIT_S")
    default_idle_minutes: int = Field(60, ge=5, alias="DEPLOYMENT_DEFAULT_IDLE_MINUTES")
    # The reconciler: how often it advances creating/deleting deployments and takes idle ones down.
    reconcile_interval_s: float = Field(15.0, gt=0, alias="INFERENCE_RECONCILE_INTERVAL_S")
    # Per user, per minute, in the shared DynamoDB rate-limit store (every replica counts together).
    chat_requests_per_minute: int = Field(120, ge=1, alias="CHAT_REQUESTS_PER_MINUTE")
    # At most this many invocations in flight per replica; more wait their turn (never a 500).
    max_concurrent_invocations: int = Field(64, ge=1, alias="INFERENCE_MAX_CONCURRENT_INVOCATIONS")
    invocation_timeout_s: float = Field(600.0, gt=0, alias="INFERENCE_INVOCATION_TIMEOUT_S")

    # A chat request carries a conversation: more than other bodies (MAX_REQUEST_BODY_BYTES), still bounded.
    max_chat_request_bytes: int = Field(4 * 1024**2, ge=1024, alias="MAX_CHAT_REQUEST_BYTES")

    model_config = ServiceSettings.model_config | {"populate_by_name": True}

    def route_body_limits(self) -> dict[tuple[str, str], int]:
        return chat_routes(self.max_chat_request_bytes)
