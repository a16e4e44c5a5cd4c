"""Fakes for inference's handlers (services/inference/deps.py protocols): in-memory stores with the same
conditional moves as the DynamoDB ones, and a SageMaker control plane whose resources stay Creating/Deleting
until `settle()` (the test says when SageMaker is done, so nothing races)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from services.inference.catalog import ServingCatalog
from services.inference.deps import Deps, ServingConfig
from services.inference.models import (
    ACTIVE_DEPLOYMENT_STATUSES,
    Deployment,
    DeploymentStatus,
    Evaluation,
    FileView,
    FineTunedModel,
)
from services.inference.stores import ALLOWED_FROM
from shared.envelope import MemoryCommandQueue, MemoryPublisher

CATALOG = Path(__file__).resolve().parents[2] / "services" / "inference" / "serving_catalog.json"


def client_error(code: str, message: str, status: int = 400, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}, **extra}, "op")


class FakeModels:
    def __init__(self) -> None:
        self.items: dict[str, FineTunedModel] = {}

    async def put(self, model: FineTunedModel) -> bool:
        if model.model_id in self.items:
            return False
        self.items[model.model_id] = model
        return True

    async def get(self, model_id: str) -> FineTunedModel | None:
        return self.items.get(model_id)

    async def for_user(self, user_id: str) -> list[FineTunedModel]:
        return [m for m in self.items.values() if m.user_id == user_id]

    async def mark_deleted(self, model_id: str) -> bool:
        model = self.items.get(model_id)
        if model is None or model.deleted:
            return False
        self.items[model_id] = model.model_copy(update={"deleted": True})
        return True

    async def delete(self, model_id: str) -> None:
        self.items.pop(model_id, None)


class FakeDeployments:
    def __init__(self) -> None:
        self.items: dict[str, Deployment] = {}

    async def create(self, deployment: Deployment) -> None:
        assert deployment.deployment_id not in self.items
        self.items[deployment.deployment_id] = deployment

    async def get(self, deployment_id: str) -> Deployment | None:
        return self.items.get(deployment_id)

    async def for_user(self, user_id: str) -> list[Deployment]:
        return sorted((d for d in self.items.values() if d.user_id == user_id), key=lambda d: -d.created_at)

    async def active(self) -> list[Deployment]:
        return [d for d in self.items.values() if d.status in ACTIVE_DEPLOYMENT_STATUSES]

    async def transition(self, deployment_id: str, to: DeploymentStatus, **changes: Any) -> bool:
        current = self.items.get(deployment_id)
        if current is None or current.status not in ALLOWED_FROM[to]:
            return False
        self.items[deployment_id] = current.model_copy(update={"status": to, **changes})
        return True

    async def touch(self, deployment_id: str, at: int) -> None:
        current = self.items[deployment_id]
        if (current.last_used_at or 0) < at:
            self.items[deployment_id] = current.model_copy(update={"last_used_at": at})

    async def delete(self, deployment_id: str) -> None:
        self.items.pop(deployment_id, None)


class FakeEvaluations:
    def __init__(self) -> None:
        self.items: dict[str, Evaluation] = {}

    async def create(self, evaluation: Evaluation) -> None:
        if evaluation.evaluation_id in self.items:
            raise client_error("ConditionalCheckFailedException", "exists")
        self.items[evaluation.evaluation_id] = evaluation

    async def get(self, evaluation_id: str) -> Evaluation | None:
        return self.items.get(evaluation_id)

    async def for_user(self, user_id: str) -> list[Evaluation]:
        return [e for e in self.items.values() if e.user_id == user_id]

    async def update(self, evaluation_id: str, only_from: tuple[str, ...], **changes: Any) -> bool:
        current = self.items.get(evaluation_id)
        if current is None or current.status not in only_from:
            return False
        self.items[evaluation_id] = Evaluation.model_validate({**current.model_dump(), **changes})
        return True

    async def delete(self, evaluation_id: str) -> None:
        self.items.pop(evaluation_id, None)


class FakeFiles:
    def __init__(self) -> None:
        self.items: dict[str, FileView] = {}

    async def put(self, view: FileView) -> None:
        self.items[view.file_id] = view

    async def get(self, file_id: str) -> FileView | None:
        return self.items.get(file_id)

    async def delete_of(self, user_id: str) -> None:
        self.items = {k: v for k, v in self.items.items() if v.user_id != user_id}


class FakeLimiter:
    def __init__(self) -> None:
        self.hits: list[str] = []

    async def hit(self, name: str, limit: int, window_s: int) -> None:
        self.hits.append(name)


@dataclass
class FakeSageMaker:
    """Endpoints and inference components by name: created Creating, deleted Deleting; settle() finishes both
    (or fails what `fail` names). Every call is recorded."""

    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    components: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)

    def settle(self) -> None:
        for table, key in ((self.endpoints, "EndpointStatus"), (self.components, "InferenceComponentStatus")):
            for name in list(table):
                status = table[name][key]
                if status == "Creating":
                    table[name][key] = "Failed" if name in self.fail else "InService"
                    table[name]["FailureReason"] = self.fail.get(name)
                elif status == "Deleting":
                    del table[name]

    async def _record(self, op: str, request: dict[str, Any]) -> None:
        self.calls.append((op, copy.deepcopy(request)))

    async def create_model(self, **request: Any) -> Any:
        await self._record("CreateModel", request)
        if request["ModelName"] in self.models:
            raise client_error("ValidationException", "Cannot create already existing model")
        self.models[request["ModelName"]] = request

    async def delete_model(self, *, ModelName: str) -> Any:
        await self._record("DeleteModel", {"ModelName": ModelName})
        if self.models.pop(ModelName, None) is None:
            raise client_error("ValidationException", f"Could not find model {ModelName}")

    async def create_endpoint_config(self, **request: Any) -> Any:
        await self._record("CreateEndpointConfig", request)
        if request["EndpointConfigName"] in self.configs:
            raise client_error("ValidationException", "Cannot create already existing endpoint configuration")
        self.configs[request["EndpointConfigName"]] = request

    async def delete_endpoint_config(self, *, EndpointConfigName: str) -> Any:
        await self._record("DeleteEndpointConfig", {"EndpointConfigName": EndpointConfigName})
        if self.configs.pop(EndpointConfigName, None) is None:
            raise client_error("ValidationException", f"Could not find endpoint configuration {EndpointConfigName}")

    async def create_endpoint(self, **request: Any) -> Any:
        await self._record("CreateEndpoint", request)
        if request["EndpointName"] in self.endpoints:
            raise client_error("ValidationException", "Cannot create already existing endpoint")
        self.endpoints[request["EndpointName"]] = {"EndpointStatus": "Creating", **request}

    async def describe_endpoint(self, *, EndpointName: str) -> Any:
        if EndpointName not in self.endpoints:
            raise client_error("ValidationException", f"Could not find endpoint \"{EndpointName}\".")
        return dict(self.endpoints[EndpointName])

    async def delete_endpoint(self, *, EndpointName: str) -> Any:
        await self._record("DeleteEndpoint", {"EndpointName": EndpointName})
        assert not any(c["EndpointName"] == EndpointName for c in self.components.values()), \
            "an endpoint is deleted only once its components are gone"
        self.endpoints[EndpointName]["EndpointStatus"] = "Deleting"

    async def create_inference_component(self, **request: Any) -> Any:
        await self._record("CreateInferenceComponent", request)
        name = request["InferenceComponentName"]
        if name in self.components:
            raise client_error("ValidationException", "Cannot create already existing inference component")
        self.components[name] = {"InferenceComponentStatus": "Creating", **request}

    async def describe_inference_component(self, *, InferenceComponentName: str) -> Any:
        if InferenceComponentName not in self.components:
            raise client_error("ValidationException", f"Could not find inference component {InferenceComponentName}")
        return dict(self.components[InferenceComponentName])

    async def delete_inference_component(self, *, InferenceComponentName: str) -> Any:
        await self._record("DeleteInferenceComponent", {"InferenceComponentName": InferenceComponentName})
        self.components[InferenceComponentName]["InferenceComponentStatus"] = "Deleting"

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


class FakeBody:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.closed = False

    async def read(self) -> bytes:
        return self._data

    async def iter_chunks(self, size: int) -> Any:
        for i in range(0, len(self._data), size):
            yield self._data[i:i + size]

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeRuntime:
    """Answers each invocation with the next of `answers` (bytes, or a ClientError to raise)."""

    answers: list[Any] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def invoke_endpoint(self, **request: Any) -> Any:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {"Body": FakeBody(answer)}

    async def invoke_endpoint_with_response_stream(self, **request: Any) -> Any:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer

        async def events() -> Any:
            for part in answer:
                yield {"PayloadPart": {"Bytes": part}}
        return {"Body": events()}


class FakeS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    async def get_object(self, **request: Any) -> Any:
        return {"Body": FakeBody(self.objects[(request["Bucket"], request["Key"])])}

    async def put_object(self, **request: Any) -> Any:
        self.objects[(request["Bucket"], request["Key"])] = request["Body"]

    async def delete_object(self, **request: Any) -> Any:
        self.objects.pop((request["Bucket"], request["Key"]), None)


def inference_deps(on_demand: bool = False) -> Deps:
    return Deps(models=FakeModels(), deployments=FakeDeployments(), evaluations=FakeEvaluations(),
                files=FakeFiles(), catalog=ServingCatalog.load(CATALOG), events=MemoryPublisher(),
                commands=MemoryCommandQueue(), sagemaker=FakeSageMaker(), runtime=FakeRuntime(), s3=FakeS3(),
                limiter=FakeLimiter(),
                config=ServingConfig(bucket="bucket", role_arn="arn:aws:iam::123456789012:role/serving",
                                     image_uri="lmi:latest", hf_token_secret_id=None, deploy_on_demand=on_demand,
                                     on_demand_wait_s=5, default_idle_minutes=60, chat_requests_per_minute=100,
                                     invocation_timeout_s=60))
