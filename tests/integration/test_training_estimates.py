"""Issue #5 through the training app over HTTP: POST /api/estimates from the files projection's validation
statistics, `dry_run` on job creation, and the throughput table estimates learn from."""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any

import httpx
from aiobotocore.session import get_session

from services.training.throughput import ThroughputStore
from shared.contracts import resources
from tests.support.accounts import bearer, register
from tests.support.training_cluster import announce_file
from tests.support.workers import drain


def _validated_file(provisioned: dict[str, Any], user_id: str, examples: int = 20, tokens: int = 4000) -> str:
    """A validated file's events as files publishes them, estimated_tokens included; the projection takes them."""
    file_id = announce_file(provisioned, user_id, '{"messages": []}\n', examples=examples, estimated_tokens=tokens)
    asyncio.run(drain("training", lambda: True))
    return file_id


def test_estimate_uses_the_files_validation_statistics(training_url: str, auth_url: str,
                                                       provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    file_id = _validated_file(provisioned, session["user"]["id"])
    response = httpx.post(f"{training_url}/api/estimates", headers=bearer(session), json={
        "training_file": file_id, "model": "Qwen/Qwen2.5-7B-Instruct", "spot": True,
        "hyperparameters": {"n_epochs": 3, "batch_size": 4}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["instance_type"] == "ml.g5.xlarge" and body["trained_tokens"] == 12000 and body["steps"] == 15
    assert body["inputs"]["file_tokens"] == 4000 and body["inputs"]["tokens_source"] == "file validation"
    assert body["estimated_cost_usd"] == body["cost_spot_usd"] < body["cost_on_demand_usd"]
    # The instance must fit; bounds name their field; another user's file is unknown.
    too_small = httpx.post(f"{training_url}/api/estimates", headers=bearer(session), json={
        "training_file": file_id, "model": "Qwen/Qwen2.5-7B-Instruct", "instance_type": "ml.m5.large"})
    assert too_small.status_code == 400 and too_small.json()["error"]["param"] == "instance_type"
    bad = httpx.post(f"{training_url}/api/estimates", headers=bearer(session), json={
        "training_file": file_id, "model": "llm-tuner/tiny-chat", "hyperparameters": {"lora_r": 0}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "hyperparameters.lora_r"
    other = httpx.post(f"{training_url}/api/estimates", headers=bearer(register(auth_url)), json={
        "training_file": file_id, "model": "llm-tuner/tiny-chat"})
    assert other.status_code == 400 and other.json()["error"]["param"] == "training_file"


def test_dry_run_answers_the_estimate_and_creates_no_job(training_url: str, auth_url: str,
                                                          provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    file_id = _validated_file(provisioned, session["user"]["id"])
    response = httpx.post(f"{training_url}/v1/fine_tuning/jobs", headers=bearer(session), json={
        "training_file": file_id, "model": "llm-tuner/tiny-chat", "dry_run": True, "max_cost_usd": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["instance_type"] == "ml.m5.large"
    assert body["stopping_condition"] == {"MaxRuntimeInSeconds": math.floor(0.5 / 0.115 * 3600)}
    assert body["hyperparameters"]["n_epochs"] == 5  # "auto" for 20 examples, as the job would resolve it
    listed = httpx.get(f"{training_url}/v1/fine_tuning/jobs", headers=bearer(session)).json()
    assert listed["data"] == []


def test_throughput_store_keeps_a_running_average(provisioned: dict[str, Any]) -> None:
    async def scenario() -> tuple[float | None, float | None]:
        async with get_session().create_client("dynamodb") as db:
            store = ThroughputStore(db, resources.TRAINING_THROUGHPUT_TABLE)
            model = f"m-{os.urandom(4).hex()}"
            before = await store.seconds_per_token(model, "ml.g5.xlarge")
            await store.record(model, "ml.g5.xlarge", 100.0, 10_000)
            await store.record(model, "ml.g5.xlarge", 300.0, 10_000)
            return before, await store.seconds_per_token(model, "ml.g5.xlarge")

    assert asyncio.run(scenario()) == (None, 0.02)
