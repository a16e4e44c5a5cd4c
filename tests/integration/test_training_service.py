"""training against the embedded AWS over HTTP: the jobs API, its worker on the real queue, the files
projection fed through SNS, and SageMaker played by the local emulator running a fake, fast entry point
(the real trainer runs in the e2e test)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from shared.contracts import resources
from shared.contracts.files_events import FileUploaded
from shared.contracts.training_events import JOB_STATUS_EVENTS, JOB_SUCCEEDED, LAUNCH_REQUESTED
from tests.support.accounts import bearer, register
from tests.support.events_tap import Tap
from tests.support.fake_emulator import emulator_with_fake_trainer
from tests.support.training_cluster import (
    announce_file,
    create_job,
    get_job,
    publish_file_event,
    rejected,
    upload_file,
    validated,
)
from tests.support.workers import drain

FAKE_TRAINER = r'''
import json, os, sys
from pathlib import Path
train = Path(os.environ["SM_CHANNEL_TRAIN"])
text = "".join(p.read_text() for p in sorted(train.rglob("*")) if p.is_file())
if "PLEASE FAIL" in text:
    Path(os.environ["SM_OUTPUT_DIR"], "failure").write_text("ValueError: the data asked to fail")
    sys.exit(1)
Path(os.environ["SM_MODEL_DIR"], "adapter_config.json").write_text("{}")
records = [{"step": 1, "train_loss": 1.5, "trained_tokens": 160},
           {"step": 2, "train_loss": 1.25, "valid_loss": 1.75, "trained_tokens": 321}]
with Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.jsonl").open("w") as sink:
    for record in records:
        print("METRICS " + json.dumps(record), flush=True)
        sink.write(json.dumps(record) + "\n")
'''


@pytest.fixture(scope="module")
def emulator(aws: Any, provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings: dict[str, str] = {}
    with emulator_with_fake_trainer(tmp_path_factory.mktemp("emulator"), FAKE_TRAINER, **settings) as url:
        yield url


@pytest.fixture(scope="module")
def api(emulator: str, training_url: str) -> str:
    return training_url


async def _drain_worker(until: Any, deadline_s: float = 30) -> None:
    await drain("training", until, deadline_s)


def test_job_goes_from_create_to_succeeded(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    tap = Tap(provisioned["topics"][resources.TRAINING_TOPIC])
    session = register(auth_url)
    file_id = announce_file(provisioned, session["user"]["id"], '{"messages": []}\n')
    created = httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(session),
                         json={"model": "llm-tuner/tiny-chat", "training_file": file_id, "suffix": "it",
                               "hyperparameters": {"n_epochs": 2}})
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    asyncio.run(_drain_worker(lambda: get_job(api, session, job_id)["status"] in ("succeeded", "failed")))
    job = get_job(api, session, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["trained_tokens"] == 321 and job["hyperparameters"]["n_epochs"] == 2
    assert job["model_artifact"].endswith(f"/{job_id}/output/model.tar.gz")
    # The results CSV, from the metrics.jsonl SageMaker packed into output.tar.gz, under the user's files.
    [result_id] = job["result_files"]
    csv = boto3.client("s3").get_object(Bucket=resources.BUCKET, Key=f"files/{session['user']['id']}/{result_id}")
    assert csv["Body"].read().decode().splitlines() == [
        "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy", "1,1.5,,,", "2,1.25,,1.75,"]
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=job_id)
    assert described["HyperParameters"]["n_epochs"] == "2"
    assert {t["ChannelName"] for t in described["InputDataConfig"]} == {"train", "model"}
    statuses = []
    for status in ("validating_files", "queued", "running", "succeeded"):
        type_ = JOB_STATUS_EVENTS[status].TYPE
        event = tap.wait_for(lambda e, t=type_: e["type"] == t and e["data"]["job_id"] == job_id)
        statuses.append(event["data"]["status"])
        # Every message the create request caused carries its request id, SageMaker's events included.
        assert event["correlation_id"] == created.headers["x-request-id"]
    assert statuses == ["created", "queued", "running", "succeeded"]  # the created event says "created"
    succeeded = tap.wait_for(lambda e: e["type"] == JOB_SUCCEEDED and e["data"]["job_id"] == job_id)
    assert succeeded["data"]["result_file"]["file_id"] == result_id


def test_training_failure_reaches_the_job(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    file_id = announce_file(provisioned, session["user"]["id"], "PLEASE FAIL\n")
    job_id = httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(session),
                        json={"model": "llm-tuner/tiny-chat", "training_file": file_id}).json()["id"]
    asyncio.run(_drain_worker(lambda: get_job(api, session, job_id)["status"] in ("succeeded", "failed")))
    job = get_job(api, session, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "training_failed"
    assert "the data asked to fail" in job["error"]["message"]


def _job_waiting_on_a_validating_file(api: str, auth_url: str, provisioned: dict[str, Any], content: str,
                                      caplog: pytest.LogCaptureFixture) -> tuple[dict[str, Any], FileUploaded, str]:
    """A job whose launch found its file still validating: the job waits on it, and the launch command was done
    with, not left on the queue to come back (the old launch re-sent itself for about three minutes, then failed
    the job)."""
    session = register(auth_url)
    uploaded = upload_file(session["user"]["id"], content)
    publish_file_event(provisioned, uploaded)
    job_id = create_job(api, session, uploaded.file_id)
    with caplog.at_level(logging.INFO, logger="shared.consumer"):
        asyncio.run(_drain_worker(None))
    launches = [r.getMessage() for r in caplog.records
                if r.name == "shared.consumer" and getattr(r, "event_type", None) == LAUNCH_REQUESTED]
    assert launches and set(launches) == {"message handled"}, launches  # not "not ready; retrying later"
    assert get_job(api, session, job_id)["status"] == "validating_files"
    return session, uploaded, job_id


def test_a_validation_slower_than_any_retry_budget_still_launches_its_job(
        api: str, auth_url: str, provisioned: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    session, uploaded, job_id = _job_waiting_on_a_validating_file(api, auth_url, provisioned, '{"messages": []}\n',
                                                                  caplog)
    # WHEN the validation arrives, however much later: nothing polls in between
    publish_file_event(provisioned, validated(uploaded))
    # THEN it wakes the launch, and the job runs
    asyncio.run(_drain_worker(lambda: get_job(api, session, job_id)["status"] in ("succeeded", "failed"), 60))
    job = get_job(api, session, job_id)
    assert job["status"] == "succeeded", job["error"]


def test_a_file_rejected_while_its_job_waits_fails_the_job(api: str, auth_url: str, provisioned: dict[str, Any],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    session, uploaded, job_id = _job_waiting_on_a_validating_file(api, auth_url, provisioned, "x\n", caplog)
    publish_file_event(provisioned, rejected(uploaded))
    asyncio.run(_drain_worker(lambda: get_job(api, session, job_id)["status"] != "validating_files"))
    job = get_job(api, session, job_id)
    assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file", job
    assert job["error"]["param"] == "training_file" and "Line 3" in job["error"]["message"]


def test_a_rejected_file_is_refused_at_create(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    file_id = announce_file(provisioned, session["user"]["id"], "x\n", status="rejected")
    asyncio.run(_drain_worker(lambda: True))  # the projection takes the file's events in
    response = httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(session),
                          json={"model": "llm-tuner/tiny-chat", "training_file": file_id})
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"
    assert "Line 3" in response.json()["error"]["message"]


def test_list_is_newest_first_paged_and_private(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    alice, bob = register(auth_url), register(auth_url)
    file_id = announce_file(provisioned, alice["user"]["id"], "{}\n")
    ids = [httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(alice),
                      json={"model": "llm-tuner/tiny-chat", "training_file": file_id}).json()["id"] for _ in range(3)]
    first = httpx.get(f"{api}/v1/fine_tuning/jobs?limit=2", headers=bearer(alice)).json()
    assert [j["id"] for j in first["data"]] == ids[::-1][:2] and first["has_more"] is True
    rest = httpx.get(f"{api}/v1/fine_tuning/jobs?limit=2&after={ids[1]}", headers=bearer(alice)).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert httpx.get(f"{api}/v1/fine_tuning/jobs", headers=bearer(bob)).json()["data"] == []
    assert httpx.get(f"{api}/v1/fine_tuning/jobs/{ids[0]}", headers=bearer(bob)).status_code == 404
    assert httpx.get(f"{api}/v1/fine_tuning/jobs/{ids[0]}/events", headers=bearer(bob)).status_code == 404
    asyncio.run(_drain_worker(lambda: all(get_job(api, alice, i)["status"] != "validating_files" for i in ids)))


@pytest.mark.parametrize(("body", "param"), [
    ({"training_file": "file-x"}, "model"),
    ({"model": "llm-tuner/tiny-chat"}, "training_file"),
    ({"model": "nope", "training_file": "file-x"}, "model"),
    ({"model": "llm-tuner/tiny-chat", "training_file": "file-x", "hyperparameters": {"n_epochs": "lots"}},
     "hyperparameters.n_epochs"),
    ({"model": "llm-tuner/tiny-chat", "training_file": "file-x", "suffix": ""}, "suffix"),
    ({"model": "llm-tuner/tiny-chat", "training_file": "file-x", "seed": -1}, "seed"),
    ({"model": "llm-tuner/tiny-chat", "training_file": "file-x", "surprise": 1}, "surprise"),
])
def test_bad_job_requests_name_the_field(api: str, auth_url: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(register(auth_url)), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_job_ids_and_bad_paging(api: str, auth_url: str) -> None:
    session = register(auth_url)
    assert httpx.get(f"{api}/v1/fine_tuning/jobs/ftjob-nope", headers=bearer(session)).status_code == 404
    assert httpx.get(f"{api}/v1/fine_tuning/jobs/whatever", headers=bearer(session)).status_code == 404
    assert httpx.get(f"{api}/v1/fine_tuning/jobs?limit=0", headers=bearer(session)).status_code == 400
    assert httpx.get(f"{api}/v1/fine_tuning/jobs?after=ftjob-nope", headers=bearer(session)).status_code == 404
