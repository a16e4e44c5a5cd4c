"""training's handlers with fakes: the job state machine, idempotent launches, the file projection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from services.training import handlers
from services.training.catalog import Catalog
from services.training.models import CreateJob, FileView, Hyperparameters, Job
from services.training.settings import Settings
from shared.consumer import RetryLater
from shared.errors import InvalidRequest, NotFound
from shared.events import SAGEMAKER_STATE_CHANGE, Envelope, MemoryCommandQueue, MemoryPublisher


class FakeJobsStore:
    """The JobsStore contract in memory, conditional transitions included."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.files: dict[str, FileView] = {}
        self.secondary_at: dict[str, int] = {}

    async def create(self, job: Job) -> None:
        assert job.job_id not in self.jobs
        self.jobs[job.job_id] = job.model_copy(deep=True)

    async def get(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return job.model_copy(deep=True) if job else None

    async def list_for_user(self, user_id: str, limit: int, after: Job | None) -> tuple[list[Job], bool]:
        mine = sorted((j for j in self.jobs.values() if j.user_id == user_id), key=lambda j: j.created_at,
                      reverse=True)
        if after:
            mine = [j for j in mine if j.created_at < after.created_at]
        return mine[:limit], len(mine) > limit

    async def transition(self, job_id: str, to: str, expected: tuple[str, ...], **changes: Any) -> bool:
        job = self.jobs[job_id]
        if job.status not in expected:
            return False
        self.jobs[job_id] = job.model_copy(update={"status": to, **{k: v for k, v in changes.items() if v is not None}})
        return True

    async def set_fields(self, job_id: str, **changes: Any) -> None:
        self.jobs[job_id] = self.jobs[job_id].model_copy(update=changes)

    async def set_secondary_status(self, job_id: str, value: str, at_ms: int | None = None) -> bool:
        if job_id not in self.jobs or self.jobs[job_id].secondary_status == value:
            return False
        if at_ms is not None and at_ms <= self.secondary_at.get(job_id, -1):
            return False
        if at_ms is not None:
            self.secondary_at[job_id] = at_ms
        await self.set_fields(job_id, secondary_status=value)
        return True

    async def add_event(self, job_id: str, event: dict[str, Any]) -> None:
        self.events.setdefault(job_id, []).append(event)

    async def get_file(self, file_id: str) -> FileView | None:
        return self.files.get(file_id)

    async def put_file(self, view: FileView) -> None:
        self.files[view.file_id] = view


class FakeSageMaker:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        self.over: set[str] = set()  # jobs SageMaker has already finished

    async def create_training_job(self, **request: Any) -> dict[str, Any]:
        if any(r["TrainingJobName"] == request["TrainingJobName"] for r in self.created):
            raise ClientError({"Error": {"Code": "ResourceInUse", "Message": "exists"}}, "CreateTrainingJob")
        self.created.append(request)
        return {"TrainingJobArn": "arn:x"}

    async def stop_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        if TrainingJobName not in {r["TrainingJobName"] for r in self.created} or TrainingJobName in self.over:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "not found"}}, "StopTrainingJob")
        self.stopped.append(TrainingJobName)
        return {}


class FakeS3:
    """Objects in memory; a missing key answers as S3 does."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    async def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.objects[Bucket, Key] = Body
        return {}

    async def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if (Bucket, Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        raise NotImplementedError("the unit tests never read back an archive")


@pytest.fixture
def deps() -> handlers.Deps:
    return handlers.Deps(jobs=FakeJobsStore(), catalog=Catalog.load(Settings().catalog_file),  # type: ignore[arg-type]
                         events=MemoryPublisher(), commands=MemoryCommandQueue(), sagemaker=FakeSageMaker(),
                         s3=FakeS3(),
                         launch=handlers.LaunchConfig(bucket="b", role_arn="arn:role", image_uri="img",
                                                      instance_type="ml.m5.large", max_runtime_s=3600))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _file(deps: handlers.Deps, status: str = "processed", user: str = "u1", file_id: str = "file-1") -> None:
    run(deps.jobs.put_file(FileView(file_id=file_id, user_id=user, status=status,  # type: ignore[arg-type]
                                    purpose="fine-tune", s3_uri=f"s3://b/files/{user}/{file_id}", examples=20,
                                    error="Line 2 is not valid JSON" if status == "error" else None)))


def _create(deps: handlers.Deps, **kw: Any) -> Job:
    body = CreateJob(model="llm-tuner/tiny-chat", training_file="file-1", **kw)
    return run(handlers.create_job(body, "u1", deps))  # type: ignore[no-any-return]


def _launch(deps: handlers.Deps, job: Job, retries: int = 0) -> None:
    envelope = Envelope(type="training.job.launch_requested", data={"job_id": job.job_id})
    envelope._retries = retries
    run(handlers.launch_job(envelope, deps))


def _sagemaker(deps: handlers.Deps, job: Job, status: str, **detail: Any) -> None:
    run(handlers.on_sagemaker_state(Envelope(type=SAGEMAKER_STATE_CHANGE, data={
        "TrainingJobName": job.job_id, "TrainingJobStatus": status, **detail}), deps))


def test_create_writes_the_job_and_enqueues_its_launch(deps: handlers.Deps) -> None:
    job = _create(deps, suffix="demo", metadata={"team": "a"})
    assert job.status == "validating_files" and job.job_id.startswith("ftjob-") and len(job.job_id) == 30
    assert [c.data for c in deps.commands.sent] == [{"job_id": job.job_id}]  # type: ignore[attr-defined]
    assert deps.events.types() == ["training.job.created"]  # type: ignore[attr-defined]
    body = job.openai()
    assert body["object"] == "fine_tuning.job" and body["error"] is None and body["result_files"] == []


def test_create_refuses_an_unknown_model_and_a_rejected_file(deps: handlers.Deps) -> None:
    with pytest.raises(InvalidRequest) as unknown:
        run(handlers.create_job(CreateJob(model="gpt-9", training_file="file-1"), "u1", deps))
    assert unknown.value.param == "model"
    _file(deps, status="error")
    with pytest.raises(InvalidRequest) as rejected:
        _create(deps)
    assert rejected.value.param == "training_file" and "Line 2" in rejected.value.message


def test_launch_waits_for_the_file_then_queues_and_creates_the_training_job(deps: handlers.Deps) -> None:
    job = _create(deps)
    with pytest.raises(RetryLater):
        _launch(deps, job)
    _file(deps)
    _launch(deps, job, retries=1)
    stored = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert stored.status == "queued"
    assert {k: stored.hyperparameters[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")} == {
        "n_epochs": 5, "batch_size": 4, "learning_rate_multiplier": 1.0}
    assert "auto" not in stored.hyperparameters.values()  # every field resolved (issue #5)
    [request] = deps.sagemaker.created
    assert request["TrainingJobName"] == job.job_id
    assert request["HyperParameters"]["n_epochs"] == "5"
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"train", "model"}
    assert all(isinstance(v, str) for v in request["HyperParameters"].values())


def test_a_repeated_launch_is_harmless(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    _launch(deps, job)  # redelivered command: status is queued, SageMaker says ResourceInUse
    assert len(deps.sagemaker.created) == 1
    assert deps.events.types().count("training.job.queued") == 1  # type: ignore[attr-defined]


def test_another_users_file_fails_the_job_once_the_wait_is_over(deps: handlers.Deps) -> None:
    _file(deps, user="someone-else")
    job = _create(deps)
    with pytest.raises(RetryLater):
        _launch(deps, job)
    _launch(deps, job, retries=handlers.FILE_WAIT_RETRIES)
    failed = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert failed.status == "failed" and failed.error["code"] == "invalid_training_file"
    assert deps.sagemaker.created == []


def _validated(deps: handlers.Deps, example_type: str) -> None:
    run(handlers.on_file_event(Envelope(type="file.validated", data={
        "file_id": "file-1", "user_id": "u1", "purpose": "fine-tune", "s3_uri": "s3://b/files/u1/file-1",
        "status": "processed", "examples": 20, "normalized_uri": "s3://b/normalized/u1/file-1.jsonl",
        "example_type": example_type}), deps))


def test_the_train_channel_reads_the_normalised_examples(deps: handlers.Deps) -> None:
    _validated(deps, "chat")
    _launch(deps, _create(deps))
    [request] = deps.sagemaker.created
    [train] = [c for c in request["InputDataConfig"] if c["ChannelName"] == "train"]
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == "s3://b/normalized/u1/file-1.jsonl"


def test_preference_data_fails_the_job_before_sagemaker(deps: handlers.Deps) -> None:
    _validated(deps, "preference")
    job = _create(deps)
    _launch(deps, job)
    failed = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert failed.status == "failed" and failed.error["code"] == "invalid_training_file"
    assert "DPO" in failed.error["message"] and deps.sagemaker.created == []


def test_sagemaker_events_drive_the_job_to_success(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps, suffix="mine")
    _launch(deps, job)
    _sagemaker(deps, job, "InProgress")
    _sagemaker(deps, job, "Completed", ModelArtifacts={"S3ModelArtifacts": "s3://b/out/model.tar.gz"},
               FinalMetricDataList=[{"MetricName": "trained_tokens", "Value": 1234.0}])
    _sagemaker(deps, job, "InProgress")  # late and out of order: ignored
    done = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert done.status == "succeeded" and done.model_artifact == "s3://b/out/model.tar.gz"
    assert done.trained_tokens == 1234 and done.finished_at is not None
    assert done.fine_tuned_model.startswith("ft:llm-tuner/tiny-chat:u1:mine:")
    assert deps.events.types()[-2:] == ["training.job.running", "training.job.succeeded"]  # type: ignore[attr-defined]
    # The results file: written under the user's files before the job names it, announced with the job.
    [file_id] = done.result_files
    result = deps.events.published[-1].data["result_file"]  # type: ignore[attr-defined]
    assert result == {"file_id": file_id, "s3_key": f"files/u1/{file_id}", "bytes": result["bytes"],
                      "filename": "step_metrics.csv"}
    csv = deps.s3.objects["b", f"files/u1/{file_id}"]
    assert csv == b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"  # no output archive
    _sagemaker(deps, job, "Completed", ModelArtifacts={"S3ModelArtifacts": "s3://b/out/model.tar.gz"})
    assert deps.events.types().count("training.job.succeeded") == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(("status", "secondary", "final", "code"), [
    ("Failed", "Failed", "failed", "training_failed"),
    ("Stopped", "Stopped", "cancelled", None),
    ("Stopped", "MaxRuntimeExceeded", "failed", "max_runtime_exceeded"),
])
def test_sagemaker_endings_map_to_job_endings(deps: handlers.Deps, status: str, secondary: str, final: str,
                                              code: str | None) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    _sagemaker(deps, job, status, SecondaryStatus=secondary, FailureReason="AlgorithmError: out of memory")
    ended = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert ended.status == final
    assert (ended.error or {}).get("code") == code


def test_users_only_see_their_own_jobs(deps: handlers.Deps) -> None:
    job = _create(deps)
    with pytest.raises(NotFound):
        run(handlers.get_job(job.job_id, "u2", deps))
    assert run(handlers.list_jobs("u2", deps, 20, None)) == ([], False)


@pytest.mark.parametrize(("examples", "epochs"), [(5, 20), (20, 5), (100, 3), (20_000, 1)])
def test_auto_epochs_follow_openais_heuristic(examples: int, epochs: int) -> None:
    assert handlers.resolve_hyperparameters(Hyperparameters(), examples)["n_epochs"] == epochs


# ---- cancel ---------------------------------------------------------------------------------------------

def _cancel(deps: handlers.Deps, job: Job, user: str = "u1") -> Job:
    from services.training.cancel import cancel_job
    return run(cancel_job(job.job_id, user, deps))  # type: ignore[no-any-return]


def _messages(deps: handlers.Deps, job: Job) -> list[str]:
    return [e["message"] for e in deps.jobs.events[job.job_id]]  # type: ignore[attr-defined]


def test_cancel_before_sagemaker_has_it_is_immediate(deps: handlers.Deps) -> None:
    job = _create(deps)  # validating_files, never launched
    cancelled = _cancel(deps, job)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert deps.sagemaker.stopped == []  # type: ignore[attr-defined]
    assert _messages(deps, job)[-2:] == ["Job cancellation requested", "Fine-tuning job cancelled"]
    _file(deps)
    _launch(deps, job)  # the launch that was queued finds it cancelled: nothing reaches SageMaker
    assert deps.sagemaker.created == []  # type: ignore[attr-defined]
    assert deps.events.types().count("training.job.cancelled") == 1  # type: ignore[attr-defined]


def test_cancel_of_a_queued_job_stops_sagemakers_copy(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    assert _cancel(deps, job).status == "cancelled"
    assert deps.sagemaker.stopped == [job.job_id]  # type: ignore[attr-defined]
    _sagemaker(deps, job, "InProgress")  # late events change nothing, and announce nothing twice
    _sagemaker(deps, job, "Stopped", SecondaryStatus="Stopped")
    assert deps.jobs.jobs[job.job_id].status == "cancelled"  # type: ignore[attr-defined]
    assert deps.events.types().count("training.job.cancelled") == 1  # type: ignore[attr-defined]
    assert _messages(deps, job).count("Fine-tuning job cancelled") == 1


def test_a_launch_that_lands_after_the_cancel_stops_its_training_job(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    deps.sagemaker.created.clear()  # type: ignore[attr-defined]
    run(deps.jobs.transition(job.job_id, "cancelled", ("queued",)))  # the cancel won the race
    launched = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    run(handlers._create_training_job(deps, launched, deps.catalog.model(job.model), "s3://b/t"))  # type: ignore[arg-type]
    assert deps.sagemaker.stopped == [job.job_id]  # type: ignore[attr-defined]


def test_cancel_of_a_running_job_waits_for_stopped(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    _sagemaker(deps, job, "InProgress")
    answered = _cancel(deps, job)
    assert answered.status == "running" and answered.cancel_requested_at is not None
    assert answered.openai()["cancel_requested_at"] == answered.cancel_requested_at
    assert _cancel(deps, job).status == "running"  # asked twice: one stop, one event
    assert deps.sagemaker.stopped == [job.job_id]  # type: ignore[attr-defined]
    assert "training.job.cancelled" not in deps.events.types()  # type: ignore[attr-defined]
    _sagemaker(deps, job, "Stopped", SecondaryStatus="Stopped")
    ended = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert ended.status == "cancelled" and ended.finished_at is not None
    assert _messages(deps, job).count("Job cancellation requested") == 1
    assert _messages(deps, job)[-1] == "Fine-tuning job cancelled"
    assert deps.events.types().count("training.job.cancelled") == 1  # type: ignore[attr-defined]


def test_finished_jobs_cannot_be_cancelled(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    _sagemaker(deps, job, "Failed", FailureReason="boom")
    with pytest.raises(InvalidRequest) as refused:
        _cancel(deps, job)
    assert refused.value.code == "job_already_finished"
    with pytest.raises(NotFound):
        _cancel(deps, job, user="u2")


def test_a_running_job_sagemaker_already_finished_is_refused(deps: handlers.Deps) -> None:
    _file(deps)
    job = _create(deps)
    _launch(deps, job)
    _sagemaker(deps, job, "InProgress")
    deps.sagemaker.over.add(job.job_id)  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest) as refused:
        _cancel(deps, job)
    assert refused.value.code == "job_already_finished"
    assert deps.jobs.jobs[job.job_id].cancel_requested_at is None  # type: ignore[attr-defined]


def test_too_few_examples_fail_the_job_not_the_request(deps: handlers.Deps) -> None:
    run(deps.jobs.put_file(FileView(file_id="file-1", user_id="u1", status="processed", purpose="fine-tune",
                                    s3_uri="s3://b/files/u1/file-1", examples=7)))
    job = _create(deps)  # accepted: OpenAI reports a bad training file on the job
    _launch(deps, job)
    failed = deps.jobs.jobs[job.job_id]  # type: ignore[attr-defined]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error == {"code": "invalid_n_examples", "param": "training_file",
                            "message": "Training file has 7 example(s), but must have at least 10 examples"}
    assert deps.sagemaker.created == []
