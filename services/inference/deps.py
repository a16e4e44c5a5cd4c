"""What inference's handlers depend on, as protocols with only the methods they use, and the `Deps` that holds
them. bootstrap.py wires the real ones; unit tests pass fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from services.inference.catalog import ServingCatalog
from services.inference.models import Deployment, DeploymentStatus, Evaluation, FileView, FineTunedModel
from shared.envelope import CommandSender, EventPublisher


class Models(Protocol):
    async def put(self, model: FineTunedModel) -> bool: ...

    async def get(self, model_id: str) -> FineTunedModel | None: ...

    async def for_user(self, user_id: str) -> list[FineTunedModel]: ...

    async def mark_deleted(self, model_id: str) -> bool: ...

    async def delete(self, model_id: str) -> None: ...


class Deployments(Protocol):
    async def create(self, deployment: Deployment) -> None: ...

    async def get(self, deployment_id: str) -> Deployment | None: ...

    async def for_user(self, user_id: str) -> list[Deployment]: ...

    async def active(self) -> list[Deployment]: ...

    async def transition(self, deployment_id: str, to: DeploymentStatus, **changes: Any) -> bool: ...

    async def touch(self, deployment_id: str, at: int) -> None: ...

    async def delete(self, deployment_id: str) -> None: ...


class Evaluations(Protocol):
    async def create(self, evaluation: Evaluation) -> None: ...

    async def get(self, evaluation_id: str) -> Evaluation | None: ...

    async def for_user(self, user_id: str) -> list[Evaluation]: ...

    async def update(self, evaluation_id: str, only_from: tuple[str, ...], **changes: Any) -> bool: ...

    async def delete(self, evaluation_id: str) -> None: ...


class Files(Protocol):
    async def put(self, view: FileView) -> None: ...

    async def get(self, file_id: str) -> FileView | None: ...

    async def delete_of(self, user_id: str) -> None: ...


class RateLimits(Protocol):
    async def hit(self, name: str, limit: int, window_s: int) -> None: ...


class SageMaker(Protocol):
    """The control plane: what deployments create, describe and delete (endpoints.py)."""

    async def create_model(self, **request: Any) -> Any: ...

    async def delete_model(self, *, ModelName: str) -> Any: ...

    async def create_endpoint_config(self, **request: Any) -> Any: ...

    async def delete_endpoint_config(self, *, EndpointConfigName: str) -> Any: ...

    async def create_endpoint(self, **request: Any) -> Any: ...

    async def describe_endpoint(self, *, EndpointName: str) -> Any: ...

    async def delete_endpoint(self, *, EndpointName: str) -> Any: ...

    async def create_inference_component(self, **request: Any) -> Any: ...

    async def describe_inference_component(self, *, InferenceComponentName: str) -> Any: ...

    async def delete_inference_component(self, *, InferenceComponentName: str) -> Any: ...


class SageMakerRuntime(Protocol):
    async def invoke_endpoint(self, **request: Any) -> Any: ...

    async def invoke_endpoint_with_response_stream(self, **request: Any) -> Any: ...


class S3(Protocol):
    async def get_object(self, **request: Any) -> Any: ...

    async def put_object(self, **request: Any) -> Any: ...

    async def delete_object(self, **request: Any) -> Any: ...


@dataclass(frozen=True)
class ServingConfig:
    bucket: str
    role_arn: str
    image_uri: str
    hf_token_secret_id: str | None
    deploy_on_demand: bool
    on_demand_wait_s: float
    default_idle_minutes: int
    chat_requests_per_minute: int
    invocation_timeout_s: float
    kms_key_id: str | None = None


@dataclass
class Deps:
    models: Models
    deployments: Deployments
    evaluations: Evaluations
    files: Files
    catalog: ServingCatalog
    events: EventPublisher
    commands: CommandSender
    sagemaker: SageMaker
    runtime: SageMakerRuntime
    s3: S3
    limiter: RateLimits
    config: ServingConfig
