"""The whole path through the gateway, with real parts only: register -> login -> upload a 20-example chat
JSONL with the official openai SDK -> create a job -> a real training run in the SageMaker emulator ->
`succeeded`, `model.tar.gz` in S3, the job's events recorded, the logs in CloudWatch."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest
from transformers import AutoModelForCausalLM

from deploy.local.cluster import Cluster
from deploy.local.demo_model import DEMO_MODEL_ID
from shared.contracts import resources
from trainer_image.demo_model import make_demo_dataset

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled"}


def _sign_up(gateway: str) -> str:
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    registered = httpx.post(f"{gateway}/auth/register", json={"email": email, "password": "e2e password 123"},
                            timeout=30)
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{gateway}/auth/login", json={"email": email, "password": "e2e password 123"}, timeout=30)
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


def _wait_for_job(client: openai.OpenAI, job_id: str, deadline_s: float) -> Any:
    deadline = time.monotonic() + deadline_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in TERMINAL:
            return job, seen
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} not finished in {deadline_s}s; statuses seen: {seen}")


def test_fine_tuning_job_runs_end_to_end(cluster: Cluster, tmp_path: Path) -> None:
    token = _sign_up(cluster.gateway_url)
    client = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=token, max_retries=0)

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(example) + "\n" for example in make_demo_dataset(20, seed=7)))
    uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.filename == "train.jsonl"
    processed = client.files.wait_for_processing(uploaded.id, poll_interval=0.5, max_wait_seconds=60)
    assert processed.status == "processed", processed.status_details

    job = client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=uploaded.id, suffix="e2e",
                                         hyperparameters={"merge_adapter": True})  # type: ignore[arg-type,typeddict-unknown-key]
    assert job.status == "validating_files" and job.id.startswith("ftjob-")
    finished, statuses = _wait_for_job(client, job.id, deadline_s=420)
    assert finished.status == "succeeded", (finished.error, statuses)
    assert statuses[-1] == "succeeded" and finished.finished_at is not None
    assert finished.fine_tuned_model and finished.fine_tuned_model.startswith(f"ft:{DEMO_MODEL_ID}:")
    assert finished.hyperparameters.n_epochs == 5  # "auto" resolved for 20 examples

    listed = client.fine_tuning.jobs.list(limit=5)
    assert [j.id for j in listed.data] == [job.id]

    # The adapter is in S3, as SageMaker leaves it.
    artifact: str = finished.model_extra["model_artifact"]  # type: ignore[index]
    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    assert bucket == resources.BUCKET and key.endswith(f"{job.id}/output/model.tar.gz")
    archive = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert not any(n.startswith("merged") for n in names)  # the merged model is its own download

    # Short-lived links to each artifact; the merged model is a plain model, loadable as it is.
    links = httpx.get(f"{cluster.gateway_url}/api/jobs/{job.id}/artifacts",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert links.status_code == 200, links.text
    by_kind = {link["kind"]: link for link in links.json()["data"]}
    assert set(by_kind) == {"adapter", "merged_model", "results"}
    merged = httpx.get(by_kind["merged_model"]["url"], timeout=60)
    assert merged.status_code == 200 and len(merged.content) == by_kind["merged_model"]["bytes"]
    assert merged.headers["content-disposition"] == 'attachment; filename="merged-model.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(merged.content)) as tar:
        tar.extractall(tmp_path / "merged", filter="data")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").config.model_type

    # The job page's history: every step's metrics (read from the log before the job ended) and the log tail.
    points = httpx.get(f"{cluster.gateway_url}/api/jobs/{job.id}/metrics",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["data"]
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and len(steps) == points[-1]["total_steps"] > 0
    assert all(isinstance(p["train_loss"], float) for p in points)
    # A first job with every setting on "auto" visibly learns: the demo model's own recommended learning rate
    # (the catalog's) takes the training loss to at most half of its first step's (about a third, measured).
    losses = [p["train_loss"] for p in points]
    assert losses[-1] <= 0.5 * losses[0], losses
    tail = httpx.get(f"{cluster.gateway_url}/api/jobs/{job.id}/logs?limit=50",
                     headers={"Authorization": f"Bearer {token}"}, timeout=30).json()["data"]
    assert 0 < len(tail) <= 50 and [t["timestamp"] for t in tail] == sorted(t["timestamp"] for t in tail)

    # The job's events are recorded, newest first, as the SDK lists them.
    # (every page: with "auto" steps by tokens the demo makes about 50 steps, each an event of its own)
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50)]
    assert messages[-1] == f"Created fine-tuning job: {job.id}"
    for expected in ("Files validated, moving job to queued state", "Fine-tuning job started",
                     "The job has successfully completed"):
        assert expected in messages
    # Beyond OpenAI: one kind only (the dashboard's timeline leaves the per-step metrics to the chart).
    story = client.fine_tuning.jobs.list_events(job.id, limit=5, extra_query={"type": "message"})
    assert len(story.data) == 5 and story.has_more and all(e.type == "message" for e in story.data)
    assert story.data[0].message == messages[0]
    per_step = client.fine_tuning.jobs.list_events(job.id, limit=100, extra_query={"type": "metrics"}).data
    assert [e.data["step"] for e in per_step] == [p["step"] for p in reversed(points)]  # type: ignore[index]

    # The training run's output went to CloudWatch Logs, where SageMaker puts it.
    logs = boto3.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix=job.id)["logStreams"]
    assert streams
    lines = [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                       logStreamName=streams[0]["logStreamName"])["events"]]
    assert any(line.startswith("METRICS ") for line in lines)


def test_another_user_sees_none_of_it(cluster: Cluster) -> None:
    alice = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=_sign_up(cluster.gateway_url),
                          max_retries=0)
    bob = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=_sign_up(cluster.gateway_url),
                        max_retries=0)
    uploaded = alice.files.create(file=("a.jsonl", b'{"messages": [{"role": "user", "content": "q"}, '
                                                   b'{"role": "assistant", "content": "a"}]}\n'),
                                  purpose="fine-tune")
    job = alice.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=uploaded.id)
    # One example is too few: the job (not the request) fails, as OpenAI's does.
    failed, _ = _wait_for_job(alice, job.id, deadline_s=120)
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "invalid_n_examples"
    newest = alice.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert newest.level == "error" and "at least 10 examples" in newest.message
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.retrieve(job.id)
    for page in ("metrics", "logs", "artifacts"):
        response = httpx.get(f"{cluster.gateway_url}/api/jobs/{job.id}/{page}",
                             headers={"Authorization": f"Bearer {bob.api_key}"}, timeout=30)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", page
    assert bob.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.BadRequestError) as bad_model:
        bob.fine_tuning.jobs.create(model="no-such-model", training_file=uploaded.id)
    assert bad_model.value.param == "model"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key="sk-wrong", max_retries=0).files.list()


def test_a_program_uses_an_api_key_until_it_is_revoked(cluster: Cluster) -> None:
    token = _sign_up(cluster.gateway_url)
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{cluster.gateway_url}/auth/api-keys", json={"name": "ci"}, headers=headers)
    assert created.status_code == 201 and created.json()["key"].startswith("sk-")
    program = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=created.json()["key"], max_retries=0)
    uploaded = program.files.create(file=("k.jsonl", b'{"messages": [{"role": "user", "content": "q"}, '
                                                     b'{"role": "assistant", "content": "a"}]}\n'),
                                    purpose="fine-tune")
    assert [f.id for f in program.files.list().data] == [uploaded.id]
    revoked = httpx.delete(f"{cluster.gateway_url}/auth/api-keys/{created.json()['id']}", headers=headers)
    assert revoked.status_code == 200
    deadline = time.monotonic() + 15
    while True:  # revocation reaches the gateway through its own queue within seconds
        try:
            program.files.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
