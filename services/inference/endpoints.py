"""What a deployment needs in SageMaker, named deterministically so every step is safe to repeat.

One endpoint per (user, base model, instance type), built on inference components: a *base* component holds
the base model in AWS's LMI container (vLLM, LoRA on), and each fine-tuned model is an *adapter* component on
it (Specification.BaseInferenceComponentName + Container.ArtifactUrl = the job's model.tar.gz). So a user's
tenth fine-tune of one base model is one more adapter on the endpoint already running, not a tenth endpoint.

Each `ensure_*` creates what is missing and answers the resource's status; each `remove_*` deletes and answers
whether it is gone. Names are SageMaker's: [a-zA-Z0-9](-*[a-zA-Z0-9])*, at most 63 characters.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from botocore.exceptions import ClientError

from services.inference.catalog import HostingInstance, ServableModel
from services.inference.deps import Deps
from services.inference.models import Deployment

log = logging.getLogger(__name__)

VARIANT = "main"
MAX_LORAS = 8  # adapters resident on the GPU at once; more are swapped in from CPU memory (OPTION_MAX_CPU_LORAS)
MAX_CPU_LORAS = 64
MAX_LORA_RANK = 64  # the trainer's lora_r goes up to 256: a larger rank is refused at deploy (deployments.py)
GONE = "Gone"


def stack_name(user_id: str, base_model: str, instance_type: str) -> str:
    digest = hashlib.sha256(f"{user_id}|{base_model}|{instance_type}".encode()).hexdigest()[:20]
    return f"llmt-{digest}"


def base_component_name(stack: str) -> str:
    return f"{stack}-base"


def adapter_component_name(stack: str, model_id: str) -> str:
    return f"llmt-a-{hashlib.sha256(f'{stack}|{model_id}'.encode()).hexdigest()[:24]}"


def _missing(exc: ClientError) -> bool:
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return "Could not find" in message or "does not exist" in message or \
        exc.response.get("Error", {}).get("Code") == "ResourceNotFound"


def _exists(exc: ClientError) -> bool:
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return "already exist" in message or exc.response.get("Error", {}).get("Code") == "ResourceInUse"


def _tags(deployment: Deployment) -> list[dict[str, str]]:
    return [{"Key": "llm-tuner:user", "Value": deployment.user_id},
            {"Key": "llm-tuner:deployment", "Value": deployment.deployment_id}]


def container_environment(model: ServableModel, deps: Deps) -> dict[str, str]:
    """LMI's configuration: where the base model comes from, vLLM with LoRA adapters on, the context length."""
    if model.artifact_prefix:
        source = f"s3://{deps.config.bucket}/{model.artifact_prefix}"
    else:
        source = model.hf_repo or model.id
    return {"HF_MODEL_ID": source, "OPTION_ROLLING_BATCH": "vllm", "OPTION_ENABLE_LORA": "true",
            "OPTION_MAX_LORAS": str(MAX_LORAS), "OPTION_MAX_CPU_LORAS": str(MAX_CPU_LORAS),
            "OPTION_MAX_LORA_RANK": str(MAX_LORA_RANK), "OPTION_MAX_MODEL_LEN": str(model.context_length)}


async def _create(call: Any, **request: Any) -> None:
    try:
        await call(**request)
    except ClientError as exc:
        if not _exists(exc):
            raise


async def ensure_endpoint(deployment: Deployment, model: ServableModel, instance: HostingInstance,
                          deps: Deps) -> tuple[str, str | None]:
    """The endpoint (and its model and config), created when missing: (EndpointStatus, FailureReason)."""
    stack = deployment.endpoint_name
    try:
        described = await deps.sagemaker.describe_endpoint(EndpointName=stack)
        return str(described["EndpointStatus"]), described.get("FailureReason")
    except ClientError as exc:
        if not _missing(exc):
            raise
    await _create(deps.sagemaker.create_model, ModelName=stack, ExecutionRoleArn=deps.config.role_arn,
                  PrimaryContainer={"Image": deps.config.image_uri,
                                    "Environment": container_environment(model, deps)},
                  Tags=_tags(deployment))
    variant: dict[str, Any] = {"VariantName": VARIANT, "InstanceType": instance.id, "InitialInstanceCount": 1,
                               "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}}
    await _create(deps.sagemaker.create_endpoint_config, EndpointConfigName=stack,
                  ExecutionRoleArn=deps.config.role_arn, ProductionVariants=[variant], Tags=_tags(deployment))
    await _create(deps.sagemaker.create_endpoint, EndpointName=stack, EndpointConfigName=stack,
                  Tags=_tags(deployment))
    return "Creating", None


async def ensure_base_component(deployment: Deployment, instance: HostingInstance,
                                deps: Deps) -> tuple[str, str | None]:
    name = base_component_name(deployment.endpoint_name)
    status = await component_status(name, deps)
    if status[0] != GONE:
        return status
    resources: dict[str, Any] = {"MinMemoryRequiredInMb": 1024}
    if instance.gpus:
        resources["NumberOfAcceleratorDevicesRequired"] = instance.gpus
    else:
        resources["NumberOfCpuCoresRequired"] = 1
    await _create(deps.sagemaker.create_inference_component, InferenceComponentName=name,
                  EndpointName=deployment.endpoint_name, VariantName=VARIANT,
                  Specification={"ModelName": deployment.endpoint_name, "ComputeResourceRequirements": resources},
                  RuntimeConfig={"CopyCount": 1}, Tags=_tags(deployment))
    return "Creating", None


async def ensure_adapter_component(deployment: Deployment, deps: Deps) -> tuple[str, str | None]:
    status = await component_status(deployment.component_name, deps)
    if status[0] != GONE:
        return status
    await _create(deps.sagemaker.create_inference_component, InferenceComponentName=deployment.component_name,
                  EndpointName=deployment.endpoint_name,
                  Specification={"BaseInferenceComponentName": base_component_name(deployment.endpoint_name),
                                 "Container": {"ArtifactUrl": deployment.adapter_artifact}},
                  Tags=_tags(deployment))
    return "Creating", None


async def component_status(name: str, deps: Deps) -> tuple[str, str | None]:
    try:
        described = await deps.sagemaker.describe_inference_component(InferenceComponentName=name)
    except ClientError as exc:
        if _missing(exc):
            return GONE, None
        raise
    return str(described["InferenceComponentStatus"]), described.get("FailureReason")


async def remove_component(name: str, deps: Deps) -> bool:
    """Asks for the component's deletion; True once it is gone."""
    status, _ = await component_status(name, deps)
    if status == GONE:
        return True
    if status != "Deleting":
        try:
            await deps.sagemaker.delete_inference_component(InferenceComponentName=name)
        except ClientError as exc:
            if not _missing(exc):
                raise
    return False


async def remove_endpoint(stack: str, deps: Deps) -> bool:
    """The endpoint, its config and its model; True once the endpoint is gone."""
    try:
        described = await deps.sagemaker.describe_endpoint(EndpointName=stack)
        if described["EndpointStatus"] != "Deleting":
            await deps.sagemaker.delete_endpoint(EndpointName=stack)
        return False
    except ClientError as exc:
        if not _missing(exc):
            raise
    for call, key in ((deps.sagemaker.delete_endpoint_config, "EndpointConfigName"),
                      (deps.sagemaker.delete_model, "ModelName")):
        try:
            await call(**{key: stack})
        except ClientError as exc:
            if not _missing(exc):
                raise
    return True
