"""Cancelling jobs, their checkpoints and their download links, against the embedded AWS and the SageMaker
emulator running a fake trainer that saves `checkpoint-{step}/` dirs (and sleeps, to be cancelled while running,
when its data says "PLEASE SLEEP"); the official openai SDK through a gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import openai
import pytest

from services.gateway.app import build_app as build_gateway
from services.gateway.settings import Settings as GatewaySettings
from shared.contracts import resources
from shared.contracts.training_events import JOB_CANCELLED
from tests.support.accounts import bearer, register
from tests.support.events_tap import Tap
from tests.support.fake_emulator import emulator_with_fake_trainer
from tests.support.polling import poll
from tests.support.servers import serve
from tests.support.training_cluster import announce_file, get_job
from tests.support.workers import drain

FAKE_TRAINER = r'''
import json, os, time
from pathlib import Path
train = Path(os.environ["SM_CHANNEL_TRAIN"])
text = "".join(p.read_text() for p in sorted(train.rglob("*")) if p.is_file())
checkpoints = Path(os.environ["SM_CHECKPOINT_DIR"])
def save(step):
    (checkpoints / f"checkpoint-{step}").mkdir(parents=True, exist_ok=True)
    (checkpoints / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"w" * step)
    (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"step": step}))  # written last
save(1)
if "PLEASE SLEEP" in text:
    time.sleep(120)  # a long-running job, on purpose: the test cancels it while it runs
save(2)
Path(os.environ["SM_MODEL_DIR"], "adapter_config.json").write_text("{}")
records = [{"step": 1, "train_loss": 1.5, "train_mean_token_accuracy": 0.5},
           {"step": 2, "train_loss": 1.25, "valid_loss": 1.75, "trained_tokens": 321}]
with Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.jsonl").open("w") as sink:
    for record in records:
        sink.write(json.dumps(record) + "\n")
'''


@pytest.fixture(scope="module")
def emulator(aws: Any, provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings: dict[str, str] = {"SAGEMAKER_EMULATOR_MAX_JOBS": "2", "SAGEMAKER_EMULATOR_CHECKPOINT_SYNC_SECONDS": "0.5",
                   "SAGEMAKER_EMULATOR_STOP_GRACE_SECONDS": "2"}
    with emulator_with_fake_trainer(tmp_path_factory.mktemp("emulator"), FAKE_TRAINER, **settings) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(emulator: str, auth_url: str, files_url: str) -> Iterator[str]:
    # A training app of its own: the session's `training_url` was built before this module's emulator (pytest
    # sets session fixtures up first), so its SageMaker client talks to moto, and cancel must reach the emulator.
    from services.training.app import build_app as build_training
    from services.training.settings import Settings as TrainingSettings

    with serve(build_training(TrainingSettings())) as training_url:
        settings = GatewaySettings(auth_url=auth_url, files_url=files_url, training_url=training_url,
                                   auth_jwks_url=f"{auth_url}/.well-known/jwks.json")
        with serve(build_gateway(settings)) as url:
            yield url


def _client(gateway: str, session: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=session["access_token"], max_retries=0)


def _create(gateway: str, session: dict[str, Any], file_id: str) -> str:
    job_id: str = _client(gateway, session).fine_tuning.jobs.create(model="llm-tuner/tiny-chat",
                                                                    training_file=file_id).id
    return job_id


def _drain_until(gateway: str, session: dict[str, Any], job_id: str, *statuses: str) -> dict[str, Any]:
    asyncio.run(drain("training", lambda: get_job(gateway, session, job_id)["status"] in statuses, 60))
    return get_job(gateway, session, job_id)


def test_a_finished_job_lists_checkpoints_and_download_links(gateway: str, auth_url: str,
                                                             provisioned: dict[str, Any]) -> None:
    session, other = register(auth_url), register(auth_url)
    job_id = _create(gateway, session, announce_file(provisioned, session["user"]["id"], '{"messages": []}\n'))
    client = _client(gateway, session)
    assert client.fine_tuning.jobs.checkpoints.list(job_id).data == []  # none yet
    job = _drain_until(gateway, session, job_id, "succeeded", "failed")
    assert job["status"] == "succeeded", job["error"]

    page = client.fine_tuning.jobs.checkpoints.list(job_id)
    assert [c.step_number for c in page.data] == [2, 1] and page.has_more is False
    newest = page.data[0]
    assert newest.id.startswith("ftckpt_") and newest.object == "fine_tuning.job.checkpoint"
    assert newest.fine_tuned_model_checkpoint == f"{job['fine_tuned_model']}:ckpt-step-2"
    assert newest.fine_tuning_job_id == job_id and newest.created_at > 0
    assert newest.metrics.train_loss == 1.25 and newest.metrics.valid_loss == 1.75
    assert page.data[1].metrics.train_mean_token_accuracy == 0.5
    first = client.fine_tuning.jobs.checkpoints.list(job_id, limit=1)
    assert [c.step_number for c in first.data] == [2] and first.has_more is True
    # Iterating the page pages on with `after` = the last id, one checkpoint a page.
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id, limit=1)] == [2, 1]
    raw = httpx.get(f"{gateway}/v1/fine_tuning/jobs/{job_id}/checkpoints?limit=1&after={newest.id}",
                    headers=bearer(session)).json()
    assert [c["step_number"] for c in raw["data"]] == [1] and raw["has_more"] is False
    assert raw["first_id"] == raw["last_id"] == page.data[1].id

    links = httpx.get(f"{gateway}/api/jobs/{job_id}/artifacts", headers=bearer(session))
    assert links.status_code == 200, links.text
    body = links.json()
    assert body["object"] == "list" and [a["kind"] for a in body["data"]] == ["adapter", "results"]
    now = time.time()
    for artifact in body["data"]:
        assert now < artifact["expires_at"] <= now + 15 * 60 + 5
        downloaded = httpx.get(artifact["url"])  # a presigned GET: no credentials needed
        assert downloaded.status_code == 200 and len(downloaded.content) == artifact["bytes"]
    assert httpx.get(body["data"][1]["url"]).text.startswith("step,train_loss")

    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.cancel(job_id)
    assert refused.value.code == "job_already_finished"
    for path in (f"/api/jobs/{job_id}/artifacts", f"/v1/fine_tuning/jobs/{job_id}/checkpoints"):
        assert httpx.get(gateway + path, headers=bearer(other)).status_code == 404
    with pytest.raises(openai.NotFoundError):
        _client(gateway, other).fine_tuning.jobs.cancel(job_id)


def test_cancelling_a_running_job_stops_it(gateway: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    tap = Tap(provisioned["topics"][resources.TRAINING_TOPIC])
    session = register(auth_url)
    client = _client(gateway, session)
    job_id = _create(gateway, session, announce_file(provisioned, session["user"]["id"], "PLEASE SLEEP\n"))
    assert _drain_until(gateway, session, job_id, "running", "failed")["status"] == "running"
    poll(lambda: bool(client.fine_tuning.jobs.checkpoints.list(job_id).data), 20,
         "checkpoint-1, synced while the job runs")

    answered = client.fine_tuning.jobs.cancel(job_id)
    assert answered.status == "running" and (answered.model_extra or {}).get("cancel_requested_at") is not None
    assert client.fine_tuning.jobs.cancel(job_id).status == "running"  # asking again is harmless
    job = _drain_until(gateway, session, job_id, "cancelled", "succeeded", "failed")
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50).data]
    assert messages[0] == "Fine-tuning job cancelled" and messages.count("Job cancellation requested") == 1
    assert boto3.client("sagemaker").describe_training_job(TrainingJobName=job_id)["TrainingJobStatus"] == "Stopped"
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job_id).data] == [1]
    event = tap.wait_for(lambda e: e["type"] == JOB_CANCELLED and e["data"]["job_id"] == job_id)
    assert event["data"]["status"] == "cancelled"
    assert httpx.get(f"{gateway}/api/jobs/{job_id}/artifacts", headers=bearer(session)).json()["data"] == []


def test_cancelling_before_the_launch_is_immediate(gateway: str, auth_url: str,
                                                   provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    job_id = _create(gateway, session, announce_file(provisioned, session["user"]["id"], '{"messages": []}\n'))
    response = httpx.post(f"{gateway}/v1/fine_tuning/jobs/{job_id}/cancel", headers=bearer(session))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"] is not None
    asyncio.run(drain("training"))  # the launch command finds it cancelled
    assert get_job(gateway, session, job_id)["status"] == "cancelled"
    with pytest.raises(boto3.client("sagemaker").exceptions.ClientError):
        boto3.client("sagemaker").describe_training_job(TrainingJobName=job_id)
    again = httpx.post(f"{gateway}/v1/fine_tuning/jobs/{job_id}/cancel", headers=bearer(session))
    assert again.status_code == 400 and again.json()["error"]["code"] == "job_already_finished"
