"""The fault suite's world (tests/faults/): the whole cluster as `make up` runs it, on free ports, with a fast fake
trainer that can be held, and what a fault test does to it: kill a process with SIGKILL (optionally while it is
held inside a call, shared/faults.py's LLMT_FAULT_HOLD) and start it again with its own environment; take the
messages off training's queue to send them back duplicated, reordered or not at all; and check what must hold
afterwards: every job terminal, none launched twice in SageMaker, no file or artifact lost."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx

from deploy.local.cluster import ROOT, Cluster
from shared.contracts import resources
from shared.contracts.training_events import LAUNCH_REQUESTED
from shared.faults import HOLD_ENV, RELEASE_FILE
from tests.support.accounts import bearer, register
from tests.support.clusters import running_cluster
from tests.support.polling import wait_for

TERMINAL = ("succeeded", "failed", "cancelled")

# Records each run in the ledger (one line per start: the training job's name), writes an adapter and its metrics;
# "HOLD <token>" in its data holds it after its first step until a file named for the token exists, or until the
# emulator that started it is gone.
FAKE_TRAINER = r'''
import json, os, re, tempfile, time
from pathlib import Path
with open(os.environ["LLMT_FAKE_TRAINER_LEDGER"], "a") as ledger:
    ledger.write(os.environ["TRAINING_JOB_NAME"] + "\n")
train = Path(os.environ["SM_CHANNEL_TRAIN"])
text = "".join(p.read_text() for p in sorted(train.rglob("*")) if p.is_file())
hold = re.search(r"HOLD ([0-9a-f]{32})", text)
Path(os.environ["SM_MODEL_DIR"], "adapter_config.json").write_text("{}")
parent = os.getppid()
for step in (1, 2):
    print("METRICS " + json.dumps({"step": step, "train_loss": 1.0 / step, "total_steps": 2, "trained_tokens": 64}),
          flush=True)
    release = Path(tempfile.gettempdir(), f"llmt-release-{hold.group(1)}") if hold else None
    deadline = time.monotonic() + 120
    while release and not release.exists() and os.getppid() == parent and time.monotonic() < deadline:
        time.sleep(0.05)
'''


def chat_file(hold_token: str | None = None, examples: int = 12) -> bytes:
    """A fine-tune file that passes validation; with `hold_token`, the fake trainer holds on it."""
    tail = f" HOLD {hold_token}" if hold_token else ""
    return "\n".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                              {"role": "assistant", "content": f"a{i}{tail}"}]})
                     for i in range(examples)).encode()


@dataclass
class TrainerHold:
    """A token for the fake trainer's data, and its release."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def release(self) -> None:
        Path(tempfile.gettempdir(), f"llmt-release-{self.token}").touch()


@dataclass
class CallHold:
    """shared/faults.py's hold on one AWS operation in one process: its environment, and whether it holds."""

    operation: str  # "sagemaker.CreateTrainingJob"
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmt-hold-")))

    def env(self) -> dict[str, str]:
        return {HOLD_ENV: f"{self.operation}:{self.directory}"}

    def wait_held(self, timeout_s: float = 60) -> None:
        wait_for(lambda: sorted(p.name for p in self.directory.glob("held-*")), bool,
                 f"a call of {self.operation} to be held", timeout_s)

    def release(self) -> None:
        (self.directory / RELEASE_FILE).touch()


@dataclass
class FaultCluster:
    cluster: Cluster
    ledger: Path

    @property
    def gateway(self) -> str:
        return self.cluster.gateway_url

    # ---- processes ------------------------------------------------------------------------------------------

    def _process(self, name: str) -> Any:
        return next(p for p in self.cluster.processes if p.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL to the process (its group: what it started goes too), as a crash or the OOM killer would."""
        proc = self._process(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=30)

    def start(self, name: str, **env: str) -> None:
        """Start a killed process again as the cluster started it, with `env` on top; wait until it answers when it
        serves HTTP."""
        proc = self._process(name)
        assert proc.popen.poll() is not None, f"{name} is still running"
        environment = {**self.cluster.env(), **env}
        if proc.health_url and proc.name != "sagemaker-emulator":
            environment["PORT"] = str(urlsplit(proc.health_url).port)
        if proc.log_file:
            proc.log_file.close()
        proc.log_file = (self.cluster.data_dir / "logs" / f"{name}.log").open("ab")
        proc.popen = subprocess.Popen(proc.argv, cwd=ROOT, env=environment, stdout=proc.log_file,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        if proc.health_url:
            wait_for(lambda: _answers(proc.health_url) or proc.popen.poll() is not None, bool,
                     f"{name} to answer again", 90)
            assert proc.popen.poll() is None, f"{name} exited with {proc.popen.returncode}"

    def restart(self, name: str, **env: str) -> None:
        self.kill(name)
        self.start(name, **env)

    # ---- the platform, through the gateway ----------------------------------------------------------------------

    def user(self) -> dict[str, str]:
        return bearer(register(self.gateway))

    def upload(self, user: dict[str, str], content: bytes) -> str:
        response = httpx.post(f"{self.gateway}/v1/files", headers=user, data={"purpose": "fine-tune"},
                              files={"file": ("train.jsonl", content, "application/jsonl")}, timeout=60)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def file(self, user: dict[str, str], file_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.gateway}/v1/files/{file_id}", headers=user, timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def content(self, user: dict[str, str], file_id: str) -> bytes:
        response = httpx.get(f"{self.gateway}/v1/files/{file_id}/content", headers=user, timeout=30)
        assert response.status_code == 200, response.text
        return response.content

    def wait_file(self, user: dict[str, str], file_id: str, expected: str = "processed",
                  timeout_s: float = 60) -> None:
        status = wait_for(lambda: self.file(user, file_id)["status"], lambda s: s != "uploaded",
                          f"{file_id} to be validated", timeout_s)
        assert status == expected, self.file(user, file_id)

    def processed_file(self, user: dict[str, str], content: bytes) -> str:
        file_id = self.upload(user, content)
        self.wait_file(user, file_id)
        return file_id

    def create_job(self, user: dict[str, str], file_id: str) -> str:
        response = httpx.post(f"{self.gateway}/v1/fine_tuning/jobs", headers=user, timeout=30,
                              json={"model": "llm-tuner/tiny-chat", "training_file": file_id})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def job(self, user: dict[str, str], job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.gateway}/v1/fine_tuning/jobs/{job_id}", headers=user, timeout=30)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_status(self, user: dict[str, str], job_id: str, statuses: tuple[str, ...] = TERMINAL,
                    timeout_s: float = 90) -> dict[str, Any]:
        return wait_for(lambda: self.job(user, job_id), lambda j: j["status"] in statuses,
                        f"{job_id} to be one of {statuses}", timeout_s)

    # ---- SageMaker, as the emulator saw it ---------------------------------------------------------------------

    def sagemaker_jobs_for(self, job_id: str) -> list[str]:
        """The emulator's training jobs (its records on disk, kept across its restarts) made for this job."""
        names = []
        for record in (self.cluster.data_dir / "sagemaker").glob("*/job.json"):
            body = json.loads(record.read_text())
            tags = {t["Key"]: t["Value"] for t in body.get("tags") or body.get("Tags") or []}
            if tags.get("llm-tuner:job") == job_id or body.get("name") == job_id:
                names.append(str(body.get("name")))
        return names

    def trainer_runs(self, job_id: str) -> int:
        """How many times a trainer was started for this job's training job."""
        lines = self.ledger.read_text().split() if self.ledger.exists() else []
        return lines.count(job_id)

    def sagemaker_status(self, job_id: str) -> str | None:
        sagemaker = boto3.client("sagemaker", endpoint_url=f"http://127.0.0.1:{self.cluster.ports.emulator}")
        try:
            return str(sagemaker.describe_training_job(TrainingJobName=job_id)["TrainingJobStatus"])
        except sagemaker.exceptions.ClientError:
            return None

    # ---- what must hold -----------------------------------------------------------------------------------------

    def assert_settled(self, user: dict[str, str], job_id: str, expected: str = "succeeded",
                       timeout_s: float = 90) -> dict[str, Any]:
        """The job reaches `expected`; SageMaker was asked for it once at most (once, and one trainer run, when it
        succeeded); its training file is still there; a succeeded job's artifact is in S3 and its results file is
        registered and downloadable."""
        job = self.wait_status(user, job_id, timeout_s=timeout_s)
        assert job["status"] == expected, job
        launched = self.sagemaker_jobs_for(job_id)
        assert len(launched) <= 1, f"{job_id} launched {len(launched)} times in SageMaker: {launched}"
        assert self.file(user, job["training_file"])["status"] == "processed"
        if expected == "succeeded":
            assert launched == [job_id] and self.trainer_runs(job_id) == 1, (launched, self.trainer_runs(job_id))
            bucket, _, key = str(job["model_artifact"]).removeprefix("s3://").partition("/")
            assert boto3.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
            for result_file in job["result_files"]:
                wait_for(functools.partial(_status, self.gateway, user, result_file), lambda s: s == "processed",
                         f"results file {result_file} registered", 60)
                assert self.content(user, result_file)
        return job


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def _status(gateway: str, user: dict[str, str], file_id: str) -> str | None:
    response = httpx.get(f"{gateway}/v1/files/{file_id}", headers=user, timeout=30)
    return str(response.json()["status"]) if response.status_code == 200 else None


@contextlib.contextmanager
def fault_cluster(data_dir: Path) -> Iterator[FaultCluster]:
    """The cluster with the fake trainer, quick redelivery (a killed worker's message is handled again within
    seconds) and a quick reconciler (a lost launch is re-sent after 5 s); the test process's AWS clients point at
    its embedded AWS meanwhile."""
    script, ledger = data_dir / "fake_trainer.py", data_dir / "trainer-runs.txt"
    script.write_text(FAKE_TRAINER)
    env = {"SAGEMAKER_EMULATOR_ENTRYPOINT": json.dumps([sys.executable, str(script)]),
           "LLMT_FAKE_TRAINER_LEDGER": str(ledger), "SAGEMAKER_EMULATOR_MAX_JOBS": "4",
           "SAGEMAKER_EMULATOR_LOG_FLUSH_SECONDS": "0.2", "WORKER_VISIBILITY_TIMEOUT_S": "4",
           "TRAINING_RECONCILE_INTERVAL_S": "1", "TRAINING_METRICS_INTERVAL_S": "1",
           "TRAINING_RECONCILE_STUCK_LAUNCH_S": "5"}
    with running_cluster(data_dir, env, aws_env_drop=("AWS_ENDPOINT_URL_SAGEMAKER",)) as cluster:
        yield FaultCluster(cluster, ledger)


# ---- training's queue, taken off and sent back -------------------------------------------------------------------

def _queue_url(name: str = resources.TRAINING_QUEUE) -> str:
    return str(boto3.client("sqs").get_queue_url(QueueName=name)["QueueUrl"])


def take_messages(until: Any, what: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Take messages off training's queue (its worker is down) until `until(taken bodies)` holds: what was taken,
    each {"Body", "MessageAttributes"}, in the order received."""
    sqs, url = boto3.client("sqs"), _queue_url()
    taken: list[dict[str, Any]] = []

    def more() -> list[dict[str, Any]]:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageAttributeNames=["All"]).get("Messages", []):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            taken.append({"Body": message["Body"], "MessageAttributes": message.get("MessageAttributes") or {}})
        return taken

    return wait_for(more, lambda t: bool(until([json.loads(m["Body"]) for m in t])), what, timeout_s)


def send_back(messages: list[dict[str, Any]]) -> None:
    sqs, url = boto3.client("sqs"), _queue_url()
    for message in messages:
        extra = {"MessageAttributes": message["MessageAttributes"]} if message["MessageAttributes"] else {}
        sqs.send_message(QueueUrl=url, MessageBody=message["Body"], **extra)


def subject(body: dict[str, Any]) -> tuple[str, str]:
    """(what the message is, the job it is about): ("launch", id) for a launch command, ("sagemaker:<status>",
    name) for SageMaker's state change through EventBridge, ("other", "") otherwise."""
    if "detail-type" in body:
        detail = body.get("detail") or {}
        return f"sagemaker:{detail.get('TrainingJobStatus')}", str(detail.get("TrainingJobName"))
    envelope = json.loads(body["Message"]) if body.get("Type") == "Notification" else body
    if envelope.get("type") == LAUNCH_REQUESTED:
        return "launch", str((envelope.get("data") or {}).get("job_id"))
    return "other", ""


def with_new_id(message: dict[str, Any]) -> dict[str, Any]:
    """The same command sent again as a new message (a new envelope id: the inbox cannot tell it is a repeat)."""
    body = json.loads(message["Body"])
    body["id"] = f"evt_{uuid.uuid4().hex}"
    return {**message, "Body": json.dumps(body)}
