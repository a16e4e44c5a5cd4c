"""inference's tables on the emulated DynamoDB over real HTTP: conditional status moves, the sparse
status-index the reconciler reads, once-only fine-tuned models, files that never go back a state."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.inference.models import Deployment, Evaluation, FileView, FineTunedModel
from services.inference.stores import DeploymentsStore, EvaluationsStore, FilesStore, ModelsStore
from shared.aws import AwsClients
from shared.contracts import resources
from shared.settings import ServiceSettings

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest.fixture
async def db(provisioned: dict[str, Any]) -> AsyncIterator[Any]:
    clients = AwsClients(ServiceSettings())
    try:
        yield await clients.get("dynamodb")
    finally:
        await clients.close()


def deployment(user: str) -> Deployment:
    return Deployment(deployment_id=f"dep-{uuid.uuid4().hex}", user_id=user, model="llm-tuner/tiny-chat",
                      base_model="llm-tuner/tiny-chat", instance_type="ml.m5.large", status="creating",
                      endpoint_name="llmt-x", component_name="llmt-x-base", idle_minutes=60, price_per_hour=0.115,
                      additional_price_per_hour=0.115, created_at=int(time.time()))


async def test_deployment_moves_are_conditional_and_the_index_follows_them(db: Any) -> None:
    store = DeploymentsStore(db, resources.INFERENCE_DEPLOYMENTS_TABLE)
    user = f"user-{uuid.uuid4().hex[:8]}"
    one = deployment(user)
    await store.create(one)
    assert one.deployment_id in {d.deployment_id for d in await store.active()}
    assert not await store.transition(one.deployment_id, "deleted")  # not from creating
    assert await store.transition(one.deployment_id, "in_service", in_service_at=5, last_used_at=5)
    assert not await store.transition(one.deployment_id, "in_service")  # a second worker finds it done
    await store.touch(one.deployment_id, 10)
    await store.touch(one.deployment_id, 7)  # late: never moves back
    current = await store.get(one.deployment_id)
    assert current is not None and current.status == "in_service" and current.last_used_at == 10
    assert current.price_per_hour == 0.115
    assert await store.transition(one.deployment_id, "deleting", delete_reason="idle")
    assert await store.transition(one.deployment_id, "deleted", deleted_at=11)
    assert one.deployment_id not in {d.deployment_id for d in await store.active()}
    assert [d.status for d in await store.for_user(user)] == ["deleted"]


async def test_a_fine_tuned_model_is_written_once_and_deleted_once(db: Any) -> None:
    store = ModelsStore(db, resources.INFERENCE_MODELS_TABLE)
    model = FineTunedModel(model_id=f"ft:x:{uuid.uuid4().hex}", user_id="u", base_model="b", job_id="ftjob-1",
                           artifact="s3://b/k", created_at=1)
    assert await store.put(model) and not await store.put(model)
    assert await store.mark_deleted(model.model_id) and not await store.mark_deleted(model.model_id)
    stored = await store.get(model.model_id)
    assert stored is not None and stored.deleted


async def test_an_evaluation_moves_only_from_the_states_named(db: Any) -> None:
    store = EvaluationsStore(db, resources.INFERENCE_EVALUATIONS_TABLE)
    evaluation = Evaluation(evaluation_id=f"eval-{uuid.uuid4().hex}", user_id="u", models=["a", "b"], file="f",
                            max_examples=5, status="queued", created_at=1)
    await store.create(evaluation)
    assert await store.update(evaluation.evaluation_id, ("queued",), status="running")
    assert not await store.update(evaluation.evaluation_id, ("queued",), status="running")
    assert await store.update(evaluation.evaluation_id, ("running",), status="succeeded",
                              summary=[{"model": "a", "exact_match": 0.5, "loss": None, "examples": 2}])
    stored = await store.get(evaluation.evaluation_id)
    assert stored is not None and stored.summary[0].exact_match == 0.5 and stored.models == ["a", "b"]


async def test_a_files_state_never_goes_back(db: Any) -> None:
    store = FilesStore(db, resources.INFERENCE_FILES_TABLE)
    file_id = f"file-{uuid.uuid4().hex}"
    view = FileView(file_id=file_id, user_id="u", status="processed", purpose="fine-tune", filename="a.jsonl",
                    example_type="chat", normalized_uri="s3://b/k", examples=3)
    await store.put(view)
    await store.put(view.model_copy(update={"status": "uploaded", "example_type": None}))  # late event
    stored = await store.get(file_id)
    assert stored is not None and stored.status == "processed" and stored.example_type == "chat"
