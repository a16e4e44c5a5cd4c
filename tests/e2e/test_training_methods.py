"""Training methods and a job's parts through the official openai SDK, unchanged, against the whole cluster: a DPO
job whose reward accuracy rises; a job on an `ft:` model; a running job paused, then resumed, that never trains its
early steps again; a job failed after its first checkpoint (the trainer's test-only fault), retried from it.

The cluster's trainers hold after their first checkpoint until the test releases them (conftest.HeldCluster): each
pause or fault lands at a known step, whatever the machine's speed."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from deploy.local.demo_model import DEMO_MODEL_ID
from tests.e2e.conftest import HeldCluster
from tests.support.polling import wait_for
from trainer_image.demo_model import demo_facts, make_demo_dataset

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled"}
RESUMED = re.compile(r"resuming from the checkpoint at step (\d+)")


def _client(held: HeldCluster) -> tuple[openai.OpenAI, str]:
    email = f"methods-{uuid.uuid4().hex[:8]}@example.com"
    registered = httpx.post(f"{held.base_url}/auth/register", json={"email": email, "password": "e2e password 123"},
                            timeout=30)
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{held.base_url}/auth/login", json={"email": email, "password": "e2e password 123"},
                       timeout=30)
    token = str(login.json()["access_token"])
    return openai.OpenAI(base_url=f"{held.base_url}/v1", api_key=token, max_retries=0), token


def _upload(client: openai.OpenAI, path: Path, lines: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    uploaded = client.files.create(file=path.open("rb"), purpose="fine-tune")
    processed = client.files.wait_for_processing(uploaded.id, poll_interval=0.5, max_wait_seconds=60)
    assert processed.status == "processed", processed.status_details
    return uploaded.id


def _chat_file(client: openai.OpenAI, tmp_path: Path) -> str:
    return _upload(client, tmp_path / "chat.jsonl", make_demo_dataset(20, seed=11))


def _finished(client: openai.OpenAI, job_id: str, deadline_s: float = 420) -> Any:
    job = wait_for(lambda: client.fine_tuning.jobs.retrieve(job_id), lambda j: j.status in TERMINAL,
                   f"job {job_id} to finish", timeout_s=deadline_s)
    return job


def _status(client: openai.OpenAI, job_id: str, status: str, deadline_s: float = 240) -> Any:
    return wait_for(lambda: client.fine_tuning.jobs.retrieve(job_id), lambda j: j.status == status,
                    f"job {job_id} to be {status}", timeout_s=deadline_s)


def _held_at_checkpoint(client: openai.OpenAI, job_id: str) -> int:
    """The step of the job's first checkpoint, once it is in S3 (the trainer is then holding right after it)."""
    page = wait_for(lambda: client.fine_tuning.jobs.checkpoints.list(job_id), lambda p: bool(p.data),
                    f"job {job_id}'s first checkpoint", timeout_s=240)
    return int(page.data[0].step_number)


def _log(held: HeldCluster, token: str, job_id: str) -> str:
    answer = httpx.get(f"{held.base_url}/api/jobs/{job_id}/logs", params={"limit": 1000},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    return "\n".join(line["message"] for line in answer.json()["data"])


def _metric_steps(client: openai.OpenAI, job_id: str) -> list[dict[str, Any]]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=100)
    records: list[dict[str, Any]] = [e.data for e in events.data if e.type == "metrics" and isinstance(e.data, dict)]
    return sorted(records, key=lambda d: d["step"])


def test_a_dpo_job_on_preference_data_succeeds_and_its_reward_accuracy_rises(held_cluster: HeldCluster,
                                                                             tmp_path: Path) -> None:
    client, _ = _client(held_cluster)
    # OpenAI's DPO layout; the preferred reply is always the same short pattern, learnt within a few steps.
    facts = demo_facts()
    pairs = [{"input": {"messages": [{"role": "user", "content": question}]},
              "preferred_output": [{"role": "assistant", "content": "I do not know."}],
              "non_preferred_output": [{"role": "assistant", "content": facts[(7 * i + 3) % len(facts)][1]}]}
             for i, (question, _) in enumerate(facts[:24])]
    training_file = _upload(client, tmp_path / "pairs.jsonl", pairs)
    with pytest.raises(openai.BadRequestError) as supervised:  # preference pairs need DPO
        client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=training_file)
    assert "dpo" in str(supervised.value)

    job = client.fine_tuning.jobs.create(
        model=DEMO_MODEL_ID, training_file=training_file,
        method={"type": "dpo", "dpo": {"hyperparameters": {
            "beta": 0.1, "n_epochs": 3, "batch_size": 4, "learning_rate": 0.01, "lora_dropout": 0}}})  # type: ignore[arg-type]
    held_cluster.release(job.id)
    assert job.method and job.method.type == "dpo"
    done = _finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.dpo.hyperparameters.beta == 0.1  # type: ignore[union-attr]
    records = _metric_steps(client, job.id)
    accuracy = [r["reward_accuracy"] for r in records if "reward_accuracy" in r]
    assert len(accuracy) >= 3, records
    assert accuracy[-1] > accuracy[0] and accuracy[-1] > 0.5, accuracy
    assert all("chosen_logps" in r and "rejected_logps" in r and "reward_margin" in r for r in records)


def test_a_job_on_an_ft_model_continues_from_it(held_cluster: HeldCluster, tmp_path: Path) -> None:
    client, token = _client(held_cluster)
    training_file = _chat_file(client, tmp_path)
    first = client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=training_file, suffix="one",
                                           hyperparameters={"n_epochs": 1})
    held_cluster.release(first.id)
    first = _finished(client, first.id)
    assert first.status == "succeeded" and first.fine_tuned_model, first.error

    again = client.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=training_file,
                                           suffix="two", hyperparameters={"n_epochs": 1})
    held_cluster.release(again.id)
    assert again.model == first.fine_tuned_model
    done = _finished(client, again.id)
    assert done.status == "succeeded", done.error
    assert done.model == first.fine_tuned_model and done.model_extra["base_model"] == DEMO_MODEL_ID  # type: ignore[index]
    assert done.fine_tuned_model and done.fine_tuned_model.startswith(f"ft:{DEMO_MODEL_ID}:")
    assert "adapter" in _log(held_cluster, token, again.id).lower()

    # Another user's model does not exist for them.
    stranger, _ = _client(held_cluster)
    with pytest.raises(openai.NotFoundError):
        stranger.fine_tuning.jobs.create(model=first.fine_tuned_model, training_file=_chat_file(stranger, tmp_path))


def test_a_paused_job_resumes_from_its_checkpoint_and_succeeds(held_cluster: HeldCluster, tmp_path: Path) -> None:
    client, token = _client(held_cluster)
    job = client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=_chat_file(client, tmp_path),
                                         hyperparameters={"n_epochs": 3})
    step = _held_at_checkpoint(client, job.id)
    with pytest.raises(openai.BadRequestError):  # not paused yet
        client.fine_tuning.jobs.resume(job.id)

    pausing = client.fine_tuning.jobs.pause(job.id)
    assert pausing.status in ("pausing", "paused")
    paused = _status(client, job.id, "paused")
    assert paused.model_extra["parts"][0]["status"] == "paused"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):  # only a running job pauses
        client.fine_tuning.jobs.pause(job.id)

    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status in ("queued", "running")
    part = resumed.model_extra["parts"][-1]  # type: ignore[index]
    assert (part["kind"], part["from_step"], part["sagemaker_job_name"]) == ("resume", step, f"{job.id}-2")
    held_cluster.release(part["sagemaker_job_name"])
    done = _finished(client, job.id)
    assert done.status == "succeeded", done.error

    parts = done.model_extra["parts"]  # type: ignore[index]
    assert [(p["kind"], p["status"]) for p in parts] == [("start", "paused"), ("resume", "succeeded")]
    assert all(p["billed_seconds"] is not None for p in parts) and done.model_extra["billed_cost_usd"] is not None  # type: ignore[index]
    log = _log(held_cluster, token, job.id)
    assert [int(s) for s in RESUMED.findall(log)] == [step], log[-3000:]
    # The second part trained only the steps after the checkpoint: its first METRICS line is the next step.
    second = log[log.index("resuming from the checkpoint"):]
    first_steps = [int(s) for s in re.findall(r'METRICS \{"step": (\d+)', second)]
    assert first_steps and first_steps[0] == step + 1, second[:2000]
    steps = [r["step"] for r in _metric_steps(client, job.id)]
    assert steps == list(range(1, steps[-1] + 1))  # one continuous chart across the parts


def test_a_failed_job_retried_from_its_checkpoint_succeeds(held_cluster: HeldCluster, tmp_path: Path) -> None:
    client, token = _client(held_cluster)
    job = client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=_chat_file(client, tmp_path),
                                         hyperparameters={"n_epochs": 2})
    step = _held_at_checkpoint(client, job.id)
    held_cluster.release(job.id, "fail")  # the trainer's test-only fault, right after that checkpoint
    failed = _finished(client, job.id)
    assert failed.status == "failed" and failed.error and "test-only" in failed.error.message

    retry = httpx.post(f"{held_cluster.base_url}/api/jobs/{job.id}/retry", json={"max_cost_usd": 5},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert retry.status_code == 200, retry.text
    body = retry.json()
    assert body["retry"]["from_step"] == step and body["max_cost_usd"] == 5
    assert body["retry"]["message"] == f"Resuming from the checkpoint at step {step}"
    held_cluster.release(body["parts"][-1]["sagemaker_job_name"])
    done = _finished(client, job.id)
    assert done.status == "succeeded" and done.error is None, done.error
    assert [p["kind"] for p in done.model_extra["parts"]] == ["start", "retry"]  # type: ignore[index]
    assert [int(s) for s in RESUMED.findall(_log(held_cluster, token, job.id))] == [step]

    again = httpx.post(f"{held_cluster.base_url}/api/jobs/{job.id}/retry", json={},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert again.status_code == 400 and again.json()["error"]["code"] == "invalid_job_state"
