"""The reconciler against the embedded AWS and the SageMaker emulator running a fake trainer that logs METRICS
lines (slowly, when its data says "SLOW"; held after its first step until released, when it says "HOLD"):
a lost state change recovered, a lost launch re-sent, a duplicated
launch launching once, and metrics lines becoming `type: metrics` events and `training.job.metrics` events."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest

from services.training.bootstrap import build_deps
from services.training.models import Job
from services.training.reconciler import Reconciler
from services.training.settings import Settings
from services.training.store import JobsStore
from shared.aws import AwsClients
from shared.contracts import resources
from shared.contracts.sagemaker_events import EVENTBRIDGE_DETAIL_TYPE
from shared.contracts.training_events import JOB_METRICS, LaunchRequested
from shared.envelope import new_event, send_command
from tests.support.accounts import bearer, register
from tests.support.events_tap import Tap
from tests.support.fake_emulator import emulator_with_fake_trainer
from tests.support.polling import poll
from tests.support.training_cluster import announce_file, create_job, drop_training_queue, get_job
from tests.support.workers import drain

FAKE_TRAINER = r'''
import json, os, tempfile, time
from pathlib import Path
train = Path(os.environ["SM_CHANNEL_TRAIN"])
text = "".join(p.read_text() for p in sorted(train.rglob("*")) if p.is_file())
pause = 1.5 if "SLOW" in text else 0.0
# "HOLD <token>": after its first step the trainer waits for the test to release it (a file named for the token),
# so "while it runs" does not depend on the machine's speed.
hold = text.split("HOLD ", 1)[1].split()[0] if "HOLD " in text else None
Path(os.environ["SM_MODEL_DIR"], "adapter_config.json").write_text("{}")
records = [{"step": 1, "train_loss": 1.5, "learning_rate": 0.0002, "total_steps": 3},
           {"step": 2, "train_loss": 1.25, "learning_rate": 0.0001, "total_steps": 3},
           {"step": 3, "train_loss": 1.125, "valid_loss": 1.5, "total_steps": 3, "trained_tokens": 480}]
print("loading the model", flush=True)
with Path(os.environ["SM_OUTPUT_DATA_DIR"], "metrics.jsonl").open("w") as sink:
    for record in records:
        time.sleep(pause)  # a deliberately slow trainer: the reconciler reads its steps while it runs
        print("METRICS " + json.dumps(record), flush=True)
        sink.write(json.dumps(record) + "\n")
        sink.flush()
        deadline = time.monotonic() + 120
        while hold and not Path(tempfile.gettempdir(), f"llmt-release-{hold}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
'''


def held_job_data() -> tuple[str, Path]:
    """Training data that makes the fake trainer wait after its first step, and the file that releases it."""
    token = uuid.uuid4().hex
    return f"HOLD {token}\n", Path(tempfile.gettempdir(), f"llmt-release-{token}")


@pytest.fixture(scope="module")
def emulator(aws: Any, provisioned: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings: dict[str, str] = {"SAGEMAKER_EMULATOR_MAX_JOBS": "2", "SAGEMAKER_EMULATOR_LOG_FLUSH_SECONDS": "0.2"}
    with emulator_with_fake_trainer(tmp_path_factory.mktemp("emulator"), FAKE_TRAINER, **settings) as url:
        yield url


@pytest.fixture(scope="module")
def api(emulator: str, training_url: str) -> str:
    return training_url  # creates and reads jobs only; the reconciler and the worker build their own clients


class OnlyTheseJobs(JobsStore):
    """The real store, its unfinished jobs narrowed to one test's (other modules leave theirs in the shared tables)."""

    def __init__(self, dynamodb: Any, settings: Settings, job_ids: set[str]) -> None:
        super().__init__(dynamodb, settings.jobs_table, settings.job_events_table, settings.files_projection_table)
        self.job_ids = job_ids

    async def active_jobs(self, status: str, page_size: int = 100) -> list[Job]:
        return [j for j in await super().active_jobs(status, page_size) if j.job_id in self.job_ids]


def _reconcile(job_ids: set[str], now: float | None = None, metrics_only: bool = False,
               **settings: Any) -> Any:
    """One reconciler pass over these jobs only; `metrics_only`: the quick metrics read between passes instead
    (how many steps were new)."""

    async def once() -> Any:
        config = Settings(**settings)
        aws = AwsClients(config)
        try:
            ours = OnlyTheseJobs(await aws.get("dynamodb"), config, job_ids)
            reconciler = Reconciler(dataclasses.replace(await build_deps(aws, config), jobs=ours), config)
            return await (reconciler.poll_metrics(now) if metrics_only else reconciler.run_once(now))
        finally:
            await aws.close()

    return asyncio.run(once())


def _is_completed_state_change(body: dict[str, Any], job_id: str) -> bool:
    detail = body.get("detail") or {}
    return body.get("detail-type") == EVENTBRIDGE_DETAIL_TYPE and detail.get("TrainingJobName") == job_id \
        and detail.get("TrainingJobStatus") == "Completed"


def _sagemaker_status(job_id: str) -> str | None:
    sagemaker = boto3.client("sagemaker")
    try:
        return str(sagemaker.describe_training_job(TrainingJobName=job_id)["TrainingJobStatus"])
    except sagemaker.exceptions.ClientError:
        return None


def _events(api: str, session: dict[str, Any], job_id: str) -> list[Any]:
    client = openai.OpenAI(base_url=f"{api}/v1", api_key=session["access_token"], max_retries=0)
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100).data)


def test_a_lost_state_change_is_recovered(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    job_id = create_job(api, session, announce_file(provisioned, session["user"]["id"], "SLOW\n"))
    asyncio.run(drain("training", lambda: _sagemaker_status(job_id) is not None, 60))
    poll(lambda: _sagemaker_status(job_id) == "Completed", 60, "the training job to complete")
    lost: list[dict[str, Any]] = []  # SageMaker's Completed event among them, once it has reached the queue

    def completed_event_lost() -> bool:
        lost.extend(drop_training_queue())
        return any(_is_completed_state_change(body, job_id) for body in lost)

    poll(completed_event_lost, 30, "SageMaker's Completed event on training's queue, to lose it")
    assert get_job(api, session, job_id)["status"] in ("queued", "running")

    report = _reconcile({job_id})
    assert report.fed == [job_id]
    job = get_job(api, session, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["secondary_status"] == "Completed" and job["fine_tuned_model"] and job["result_files"]
    assert job["trained_tokens"] == 480 and job["estimated_finish"] is None
    assert _reconcile({job_id}).checked == 0  # finished: out of the sparse index


def test_a_job_stuck_without_a_sagemaker_job_is_relaunched(api: str, auth_url: str,
                                                           provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    file_id = announce_file(provisioned, session["user"]["id"], '{"messages": []}\n')
    asyncio.run(drain("training"))  # the file projection
    job_id = create_job(api, session, file_id)
    assert len(drop_training_queue()) >= 1  # the launch command is lost
    assert _reconcile({job_id}, reconcile_stuck_launch_s=600).relaunched == []  # not stuck for long yet
    later = time.time() + 601
    assert _reconcile({job_id}, later, reconcile_stuck_launch_s=600).relaunched == [job_id]
    assert _reconcile({job_id}, later + 1, reconcile_stuck_launch_s=600).relaunched == []  # re-sent once a while
    asyncio.run(drain("training", lambda: get_job(api, session, job_id)["status"] in ("succeeded", "failed"), 60))
    job = get_job(api, session, job_id)
    assert job["status"] == "succeeded", job["error"]


def test_a_duplicated_launch_launches_once(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    file_id = announce_file(provisioned, session["user"]["id"], '{"messages": []}\n')
    asyncio.run(drain("training"))
    job_id = create_job(api, session, file_id)
    # The create's own command first, so the repeats find the job launched. (Two different launch commands handled
    # at the same instant rest on DynamoDB's conditional write, which moto does not make atomic across concurrent
    # requests: test_training_transitions checks the condition every move writes.)
    asyncio.run(drain("training", lambda: get_job(api, session, job_id)["status"] != "validating_files"))
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=resources.TRAINING_QUEUE)["QueueUrl"]
    command = new_event(LaunchRequested(job_id=job_id), user_id=session["user"]["id"])

    async def send_twice() -> None:
        aws = AwsClients(Settings())
        try:
            for _ in range(2):  # the same command again (the inbox drops it), and a new one (the job state does)
                await send_command(await aws.get("sqs"), url, command)
            await send_command(await aws.get("sqs"), url, new_event(LaunchRequested(job_id=job_id)))
        finally:
            await aws.close()

    asyncio.run(send_twice())
    # One message at a time: SageMaker's InProgress events (one per secondary status) handled in the same batch would
    # race on moto's non-atomic conditional write and could both record "started"; what is tested here is the
    # repeated launch commands, which the inbox and the job's state turn away whatever the order.
    asyncio.run(drain("training", lambda: get_job(api, session, job_id)["status"] in ("succeeded", "failed"), 60,
                      batch_size=1))
    job = get_job(api, session, job_id)
    messages = [e.message for e in _events(api, session, job_id)]
    assert job["status"] == "succeeded", (job["error"], messages)
    summaries = boto3.client("sagemaker").list_training_jobs(NameContains=job_id)["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in summaries] == [job_id]
    assert messages.count("Files validated, moving job to queued state") == 1, messages
    assert messages.count("Fine-tuning job started") == 1, messages


def test_metrics_lines_become_events(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    tap = Tap(provisioned["topics"][resources.TRAINING_TOPIC])
    session = register(auth_url)
    data, release = held_job_data()
    job_id = create_job(api, session, announce_file(provisioned, session["user"]["id"], data))
    asyncio.run(drain("training", lambda: get_job(api, session, job_id)["status"] in ("running", "failed"), 60))
    assert get_job(api, session, job_id)["status"] == "running"

    def some_metrics() -> bool:
        _reconcile({job_id})
        return get_job(api, session, job_id)["estimated_finish"] is not None or \
            get_job(api, session, job_id)["status"] != "running"

    poll(some_metrics, 30, "a first metrics line while the job runs")
    running = get_job(api, session, job_id)
    assert running["status"] == "running" and running["estimated_finish"] >= int(time.time()) - 1
    assert running["secondary_status"] == "Training"

    release.touch()
    poll(lambda: _sagemaker_status(job_id) == "Completed", 60, "the training job to complete")
    for _ in range(2):  # a second pass finds nothing new: each step is one event
        _reconcile({job_id})
    asyncio.run(drain("training", lambda: get_job(api, session, job_id)["status"] in ("succeeded", "failed"), 60))
    events = _events(api, session, job_id)
    steps = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in steps] == [3, 2, 1]  # newest first, once each
    assert steps[0].message == "Step 3/3: training loss=1.125, validation loss=1.5"
    assert steps[0].data == {"step": 3, "train_loss": 1.125, "valid_loss": 1.5, "total_steps": 3,
                             "trained_tokens": 480}
    assert steps[2].message == "Step 1/3: training loss=1.5"
    job = get_job(api, session, job_id)
    assert job["status"] == "succeeded" and job["trained_tokens"] == 480
    published = tap.wait_for(lambda e: e["type"] == JOB_METRICS and e["data"]["job_id"] == job_id
                             and e["data"]["step"] == 3)
    assert published["data"]["train_loss"] == 1.125 and published["data"]["total_steps"] == 3
    assert published["user_id"] == session["user"]["id"]
    secondary = [e.data["secondary_status"] for e in reversed(events) if e.data and "secondary_status" in e.data]
    assert secondary[-1] == "Completed" and "Training" in secondary


def test_running_jobs_metrics_are_read_between_passes(api: str, auth_url: str, provisioned: dict[str, Any]) -> None:
    session = register(auth_url)
    data, release = held_job_data()
    job_id = create_job(api, session, announce_file(provisioned, session["user"]["id"], data))
    asyncio.run(drain("training", lambda: get_job(api, session, job_id)["status"] in ("running", "failed"), 60))
    assert get_job(api, session, job_id)["status"] == "running"
    new_steps: list[int] = []

    def some_metrics() -> bool:
        new_steps.append(_reconcile({job_id}, metrics_only=True))
        return sum(new_steps) > 0 or _sagemaker_status(job_id) != "InProgress"

    poll(some_metrics, 30, "a first metrics line, read without a reconcile pass")
    history = httpx.get(f"{api}/api/jobs/{job_id}/metrics", headers=bearer(session)).json()["data"]
    # Each step once, in order: as many as the quick reads found.
    assert [p["step"] for p in history] == list(range(1, sum(new_steps) + 1)) and history
    release.touch()
    other = register(auth_url)
    assert httpx.get(f"{api}/api/jobs/{job_id}/metrics", headers=bearer(other)).status_code == 404
