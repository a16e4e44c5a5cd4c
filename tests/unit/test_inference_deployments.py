"""Deployments' state machine (services/inference/deployments.py) against a fake SageMaker that finishes only
when the test says so: what is created, shared, taken down, and which events tell the user."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.inference import deployments, endpoints
from services.inference.deps import Deps
from services.inference.models import CreateDeployment, FineTunedModel
from services.inference.reconciler import run_once
from shared.errors import InvalidRequest, NotFound
from tests.support.inference import FakeSageMaker, inference_deps

DEMO = "llm-tuner/tiny-chat"


def sagemaker(deps: Deps) -> FakeSageMaker:
    assert isinstance(deps.sagemaker, FakeSageMaker)
    return deps.sagemaker


async def fine_tuned(deps: Deps, user: str, suffix: str) -> str:
    model_id = f"ft:{DEMO}:{user}:{suffix}:abcd1234"
    await deps.models.put(FineTunedModel(model_id=model_id, user_id=user, base_model=DEMO, job_id=f"ftjob-{suffix}",
                                         artifact=f"s3://bucket/training-jobs/{user}/ftjob-{suffix}/output/model.tar.gz",
                                         created_at=int(time.time())))
    return model_id


async def run_until(deps: Deps, deployment_id: str, status: str, rounds: int = 6) -> Any:
    """Advance and let SageMaker finish, round by round, until the deployment reaches `status`."""
    for _ in range(rounds):
        current = await deployments.advance(deployment_id, deps)
        assert current is not None
        if current.status == status:
            return current
        sagemaker(deps).settle()
    raise AssertionError(f"{deployment_id} did not reach {status}")


async def test_a_base_model_deployment_builds_endpoint_then_component() -> None:
    deps = inference_deps()
    deployment, created = await deployments.create_deployment(CreateDeployment(model=DEMO), "u1", deps)
    assert created and deployment.status == "creating" and deployment.instance_type == "ml.m5.large"
    assert deployment.price_per_hour == deployment.additional_price_per_hour == 0.115
    await deployments.advance(deployment.deployment_id, deps)
    assert sagemaker(deps).ops() == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    model = sagemaker(deps).calls[0][1]
    env = model["PrimaryContainer"]["Environment"]
    assert env["HF_MODEL_ID"] == "s3://bucket/base-models/llm-tuner-tiny-chat/"
    assert env["OPTION_ENABLE_LORA"] == "true" and env["OPTION_ROLLING_BATCH"] == "vllm"
    variant = sagemaker(deps).calls[1][1]["ProductionVariants"][0]
    assert "ModelName" not in variant  # an endpoint for inference components: the model is the component's
    assert sagemaker(deps).calls[1][1]["ExecutionRoleArn"] == deps.config.role_arn
    still = await deployments.advance(deployment.deployment_id, deps)
    assert still is not None and still.status == "creating"  # SageMaker is still Creating
    done = await run_until(deps, deployment.deployment_id, "in_service")
    assert done.in_service_at is not None
    base = sagemaker(deps).components[endpoints.base_component_name(deployment.endpoint_name)]
    assert base["Specification"]["ModelName"] == deployment.endpoint_name
    assert done.component_name == endpoints.base_component_name(deployment.endpoint_name)
    assert deps.events.types()[-1] == "inference.deployment.in_service"  # type: ignore[attr-defined]


async def test_fine_tuned_models_of_one_base_share_its_endpoint_as_adapters() -> None:
    deps = inference_deps()
    first, second = await fine_tuned(deps, "u1", "a"), await fine_tuned(deps, "u1", "b")
    one, _ = await deployments.create_deployment(CreateDeployment(model=first), "u1", deps)
    two, _ = await deployments.create_deployment(CreateDeployment(model=second), "u1", deps)
    assert one.endpoint_name == two.endpoint_name and one.component_name != two.component_name
    assert one.additional_price_per_hour == 0.115 and two.additional_price_per_hour == 0.0
    await run_until(deps, one.deployment_id, "in_service")
    await run_until(deps, two.deployment_id, "in_service")
    assert sagemaker(deps).ops().count("CreateEndpoint") == 1
    adapter = sagemaker(deps).components[two.component_name]["Specification"]
    assert adapter == {"BaseInferenceComponentName": endpoints.base_component_name(two.endpoint_name),
                       "Container": {"ArtifactUrl": two.adapter_artifact}}
    # Another user's fine-tune of the same base gets an endpoint of its own.
    other = await fine_tuned(deps, "u2", "c")
    three, _ = await deployments.create_deployment(CreateDeployment(model=other), "u2", deps)
    assert three.endpoint_name != one.endpoint_name


async def test_taking_one_adapter_down_keeps_the_endpoint_until_the_last_goes() -> None:
    deps = inference_deps()
    one, _ = await deployments.create_deployment(CreateDeployment(model=await fine_tuned(deps, "u1", "a")), "u1", deps)
    two, _ = await deployments.create_deployment(CreateDeployment(model=await fine_tuned(deps, "u1", "b")), "u1", deps)
    await run_until(deps, one.deployment_id, "in_service")
    await run_until(deps, two.deployment_id, "in_service")
    deleting = await deployments.delete_deployment(one.deployment_id, "u1", deps)
    assert deleting.status == "deleting" and deleting.delete_reason == "deleted by its owner"
    await run_until(deps, one.deployment_id, "deleted")
    assert one.component_name not in sagemaker(deps).components
    assert one.endpoint_name in sagemaker(deps).endpoints  # the other adapter still uses it
    await deployments.delete_deployment(two.deployment_id, "u1", deps)
    await run_until(deps, two.deployment_id, "deleted")
    assert not sagemaker(deps).endpoints and not sagemaker(deps).components
    assert not sagemaker(deps).models and not sagemaker(deps).configs
    assert deps.events.types()[-2:] == ["inference.deployment.deleting",  # type: ignore[attr-defined]
                                        "inference.deployment.deleted"]


async def test_a_failed_endpoint_is_taken_down_and_the_deployment_says_why() -> None:
    deps = inference_deps()
    deployment, _ = await deployments.create_deployment(CreateDeployment(model=DEMO), "u1", deps)
    sagemaker(deps).fail[deployment.endpoint_name] = "CapacityError: no ml.m5.large"
    failed = await run_until(deps, deployment.deployment_id, "failed")
    assert "CapacityError" in (failed.failure_reason or "")
    assert not sagemaker(deps).endpoints and not sagemaker(deps).models
    assert "inference.deployment.failed" in deps.events.types()  # type: ignore[attr-defined]


async def test_an_idle_deployment_is_taken_down_after_its_idle_minutes() -> None:
    deps = inference_deps()
    deployment, _ = await deployments.create_deployment(CreateDeployment(model=DEMO, idle_minutes=5), "u1", deps)
    done = await run_until(deps, deployment.deployment_id, "in_service")
    assert await run_once(deps, now=done.last_used_at + 4 * 60) == []
    assert await run_once(deps, now=done.last_used_at + 6 * 60) == [deployment.deployment_id]
    current = await deps.deployments.get(deployment.deployment_id)
    assert current is not None and current.status == "deleting" and current.delete_reason == "idle for 5 minutes"


async def test_a_second_request_for_the_same_model_answers_the_deployment_it_has() -> None:
    deps = inference_deps()
    first, created = await deployments.create_deployment(CreateDeployment(model=DEMO), "u1", deps)
    again, created_again = await deployments.create_deployment(CreateDeployment(model=DEMO), "u1", deps)
    assert created and not created_again and again.deployment_id == first.deployment_id


async def test_bad_instance_types_and_other_users_are_refused() -> None:
    deps = inference_deps()
    with pytest.raises(InvalidRequest) as unknown:
        await deployments.create_deployment(CreateDeployment(model=DEMO, instance_type="ml.nope"), "u1", deps)
    assert unknown.value.param == "instance_type"
    with pytest.raises(InvalidRequest) as small:
        await deployments.create_deployment(CreateDeployment(model="Qwen/Qwen2.5-7B-Instruct",
                                                             instance_type="ml.m5.large"), "u1", deps)
    assert small.value.code == "instance_too_small"
    mine, _ = await deployments.create_deployment(CreateDeployment(model=await fine_tuned(deps, "u1", "a")), "u1",
                                                  deps)
    with pytest.raises(NotFound):
        await deployments.get_deployment(mine.deployment_id, "u2", deps)
    with pytest.raises(NotFound):
        await deployments.create_deployment(CreateDeployment(model=mine.model), "u2", deps)
