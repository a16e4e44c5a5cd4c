"""training's handlers with fakes: the job state machine, idempotent launches, the launch waiting on its files'
validation by the event, the file projection, cancel."""

from __future__ import annotations

import time
from typing import Any

import pytest

from services.training import commands, hyperparameters, launch
from services.training.models import CreateJob, Hyperparameters
from shared.contracts.files_events import FileDeleted, FileRejected, FileUploaded, FileValidated
from shared.contracts.training_events import JOB_CANCELLED, JOB_CREATED, JOB_QUEUED, JOB_RUNNING, JOB_SUCCEEDED
from shared.errors import InvalidRequest, NotFound
from tests.support.training import (
    Fakes,
    create,
    file_event,
    launch_job,
    project,
    put_file,
    relaunch_woken,
    run,
    sagemaker_state,
)


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def test_create_writes_the_job_and_enqueues_its_launch(fakes: Fakes) -> None:
    job = create(fakes, suffix="demo", metadata={"team": "a"})
    assert job.status == "validating_files" and job.job_id.startswith("ftjob-") and len(job.job_id) == 30
    assert [c.data for c in fakes.commands.sent] == [{"job_id": job.job_id}]
    assert fakes.events.types() == [JOB_CREATED]
    assert fakes.events.published[0].data["status"] == "created"
    body = job.openai()
    assert body["object"] == "fine_tuning.job" and body["error"] is None and body["result_files"] == []


def test_create_refuses_an_unknown_model_and_a_rejected_file(fakes: Fakes) -> None:
    with pytest.raises(InvalidRequest) as unknown:
        run(commands.create_job(CreateJob(model="gpt-9", training_file="file-1"), "u1", fakes.deps))
    assert unknown.value.param == "model"
    put_file(fakes, status="error")
    with pytest.raises(InvalidRequest) as rejected:
        create(fakes)
    assert rejected.value.param == "training_file" and "Line 2" in rejected.value.message


def test_launch_queues_and_creates_the_training_job(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    stored = fakes.job(job.job_id)
    assert stored.status == "queued"
    assert {k: stored.hyperparameters[k] for k in ("n_epochs", "learning_rate_multiplier")} == {
        "n_epochs": 5, "learning_rate_multiplier": 1.0}
    assert stored.hyperparameters["tokens_per_step"] >= 1 and stored.hyperparameters["batch_size"] >= 1
    assert "auto" not in stored.hyperparameters.values()  # every field resolved (issue #5)
    [request] = fakes.sagemaker.created
    assert request["TrainingJobName"] == job.job_id
    assert request["HyperParameters"]["n_epochs"] == "5"
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"train", "model"}
    assert all(isinstance(v, str) for v in request["HyperParameters"].values())


def test_a_launch_waits_for_the_files_validation_and_the_event_wakes_it(fakes: Fakes) -> None:
    # GIVEN a job whose training file files is still validating
    project(fakes, file_event(FileUploaded))
    job = create(fakes)
    # WHEN its launch runs: the job waits for the file, and the command is done (nothing is retried later)
    assert relaunch_woken(fakes) == [job.job_id]
    assert fakes.job(job.job_id).status == "validating_files"
    assert fakes.commands.sent == [] and fakes.sagemaker.created == []
    # THEN the validation, however late, sends the launch again, which queues the job
    project(fakes, file_event(FileValidated))
    assert [c.data for c in fakes.commands.sent] == [{"job_id": job.job_id}]
    relaunch_woken(fakes)
    assert fakes.job(job.job_id).status == "queued" and len(fakes.sagemaker.created) == 1


def test_a_launch_waits_for_a_file_not_heard_of_yet(fakes: Fakes) -> None:
    job = create(fakes)  # the projection has not seen the file's upload yet
    relaunch_woken(fakes)
    assert fakes.job(job.job_id).status == "validating_files"
    project(fakes, file_event(FileUploaded))  # uploaded: still validating, nobody is woken
    assert fakes.commands.sent == []
    project(fakes, file_event(FileValidated))
    relaunch_woken(fakes)
    assert fakes.job(job.job_id).status == "queued"


@pytest.mark.parametrize("settles", [FileRejected, FileDeleted])
def test_a_file_rejected_or_deleted_while_the_launch_waits_fails_the_job(fakes: Fakes, settles: type) -> None:
    project(fakes, file_event(FileUploaded))
    job = create(fakes)
    relaunch_woken(fakes)
    extra: dict[str, Any] = {"reason": "deleted"} if settles is FileDeleted else {}
    project(fakes, file_event(settles, **extra))
    relaunch_woken(fakes)
    failed = fakes.job(job.job_id)
    assert failed.status == "failed" and failed.error is not None
    assert (failed.error["code"], failed.error["param"]) == ("invalid_training_file", "training_file")
    assert fakes.sagemaker.created == []


def test_a_file_validated_before_the_first_launch_runs_launches_the_job_once(fakes: Fakes) -> None:
    """The validation wakes the job although its launch has not run yet: two launch commands, one launch."""
    project(fakes, file_event(FileUploaded))
    job = create(fakes)
    project(fakes, file_event(FileValidated))
    assert relaunch_woken(fakes) == [job.job_id, job.job_id]
    assert fakes.job(job.job_id).status == "queued" and len(fakes.sagemaker.created) == 1
    assert fakes.events.types().count(JOB_QUEUED) == 1


def test_only_the_jobs_waiting_in_validating_files_are_woken(fakes: Fakes) -> None:
    project(fakes, file_event(FileUploaded))
    waiting, cancelled = create(fakes), create(fakes)
    relaunch_woken(fakes)
    run(commands.cancel_job(cancelled.job_id, "u1", fakes.deps))
    project(fakes, file_event(FileValidated))
    assert [c.data["job_id"] for c in fakes.commands.sent] == [waiting.job_id]


def test_another_users_file_is_refused_at_creation(fakes: Fakes) -> None:
    put_file(fakes, user="someone-else")
    with pytest.raises(InvalidRequest) as refused:
        create(fakes)
    assert (refused.value.status_code, refused.value.code, refused.value.param) == (
        400, "invalid_training_file", "training_file")
    assert fakes.jobs.jobs == {}


def test_a_file_found_to_be_another_users_after_creation_fails_the_job(fakes: Fakes) -> None:
    job = create(fakes)  # not heard of yet (and no files service to ask in this world)
    put_file(fakes, user="someone-else")
    launch_job(fakes, job)
    failed = fakes.job(job.job_id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "invalid_training_file" and "was not found" in failed.error["message"]
    assert fakes.sagemaker.created == []


def test_a_file_never_heard_of_fails_the_job_once_it_cannot_still_be_coming(fakes: Fakes) -> None:
    job = create(fakes)
    launch_job(fakes, job)
    assert fakes.job(job.job_id).status == "validating_files"
    old = int(time.time()) - launch.UNKNOWN_FILE_GRACE_S - 1
    fakes.jobs.jobs[job.job_id] = fakes.job(job.job_id).model_copy(update={"created_at_unix": old})
    launch_job(fakes, job)  # as the reconciler re-sends a stuck job's launch
    failed = fakes.job(job.job_id)
    assert failed.status == "failed" and failed.error is not None and failed.error["code"] == "invalid_training_file"


def test_a_repeated_launch_is_harmless(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    launch_job(fakes, job)  # redelivered command: status is queued, SageMaker says ResourceInUse
    assert len(fakes.sagemaker.created) == 1
    assert fakes.events.types().count(JOB_QUEUED) == 1


def test_the_train_channel_reads_the_normalised_examples(fakes: Fakes) -> None:
    project(fakes, file_event(FileValidated, normalized_uri="s3://b/normalized/u1/file-1.jsonl", example_type="chat"))
    launch_job(fakes, create(fakes))
    [request] = fakes.sagemaker.created
    [train] = [c for c in request["InputDataConfig"] if c["ChannelName"] == "train"]
    assert train["DataSource"]["S3DataSource"]["S3Uri"] == "s3://b/normalized/u1/file-1.jsonl"


def test_the_projection_never_goes_back_a_state(fakes: Fakes) -> None:
    project(fakes, file_event(FileValidated))
    project(fakes, file_event(FileUploaded))  # late
    assert fakes.jobs.files["file-1"].status == "processed" and fakes.jobs.files["file-1"].examples == 20


def test_sagemaker_events_drive_the_job_to_success(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes, suffix="mine")
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "InProgress")
    sagemaker_state(fakes, job, "Completed", ModelArtifacts={"S3ModelArtifacts": "s3://b/out/model.tar.gz"},
                    FinalMetricDataList=[{"MetricName": "trained_tokens", "Value": 1234.0}])
    sagemaker_state(fakes, job, "InProgress")  # late and out of order: ignored
    done = fakes.job(job.job_id)
    assert done.status == "succeeded" and done.model_artifact == "s3://b/out/model.tar.gz"
    assert done.trained_tokens == 1234 and done.finished_at is not None
    assert done.fine_tuned_model is not None and done.fine_tuned_model.startswith("ft:llm-tuner/tiny-chat:u1:mine:")
    assert fakes.events.types()[-2:] == [JOB_RUNNING, JOB_SUCCEEDED]
    # The results file: written under the user's files before the job names it, announced with the job.
    [file_id] = done.result_files
    result = fakes.events.published[-1].data["result_file"]
    assert result == {"file_id": file_id, "s3_key": f"files/u1/{file_id}", "bytes": result["bytes"],
                      "filename": "step_metrics.csv"}
    csv = fakes.s3.objects["b", f"files/u1/{file_id}"]
    assert csv == b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"  # no output archive
    sagemaker_state(fakes, job, "Completed", ModelArtifacts={"S3ModelArtifacts": "s3://b/out/model.tar.gz"})
    assert fakes.events.types().count(JOB_SUCCEEDED) == 1


@pytest.mark.parametrize(("status", "secondary", "final", "code"), [
    ("Failed", "Failed", "failed", "training_failed"),
    ("Stopped", "Stopped", "cancelled", None),
    ("Stopped", "MaxRuntimeExceeded", "failed", "max_runtime_exceeded"),
])
def test_sagemaker_endings_map_to_job_endings(fakes: Fakes, status: str, secondary: str, final: str,
                                              code: str | None) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, status, SecondaryStatus=secondary, FailureReason="AlgorithmError: out of memory")
    ended = fakes.job(job.job_id)
    assert ended.status == final
    assert (ended.error or {}).get("code") == code


def test_secondary_status_is_kept_and_a_change_is_an_event(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    transitions = [{"Status": "Downloading", "StatusMessage": "Downloading input data"}]
    sagemaker_state(fakes, job, "InProgress", SecondaryStatus="Downloading", SecondaryStatusTransitions=transitions)
    sagemaker_state(fakes, job, "InProgress", SecondaryStatus="Downloading", SecondaryStatusTransitions=transitions)
    sagemaker_state(fakes, job, "InProgress", SecondaryStatus="Training")
    stored = fakes.job(job.job_id)
    assert stored.secondary_status == "Training" and stored.openai()["secondary_status"] == "Training"
    assert fakes.messages(job).count("Downloading: Downloading input data") == 1
    assert "Training job status: Training" in fakes.messages(job)


def test_an_older_secondary_status_never_replaces_a_newer_one(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "Completed", SecondaryStatus="Completed", LastModifiedTime=3000)
    sagemaker_state(fakes, job, "InProgress", SecondaryStatus="Uploading", LastModifiedTime=2000)  # late
    assert fakes.job(job.job_id).secondary_status == "Completed"


def test_users_only_see_their_own_jobs(fakes: Fakes) -> None:
    job = create(fakes)
    with pytest.raises(NotFound):
        run(commands.get_job(job.job_id, "u2", fakes.deps))
    assert run(commands.list_jobs("u2", fakes.deps, 20, None)) == ([], False)


@pytest.mark.parametrize(("examples", "epochs"), [(5, 20), (20, 5), (100, 3), (20_000, 1)])
def test_auto_epochs_follow_openais_heuristic(examples: int, epochs: int) -> None:
    assert hyperparameters.resolve(Hyperparameters(), examples)["n_epochs"] == epochs


def test_too_few_examples_fail_the_job_not_the_request(fakes: Fakes) -> None:
    put_file(fakes, examples=7)
    job = create(fakes)  # accepted: OpenAI reports a bad training file on the job
    launch_job(fakes, job)
    failed = fakes.job(job.job_id)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error == {"code": "invalid_n_examples", "param": "training_file",
                            "message": "Training file has 7 example(s), but must have at least 10 examples"}
    assert fakes.sagemaker.created == []


# ---- cancel ---------------------------------------------------------------------------------------------

def _cancel(fakes: Fakes, job_id: str, user: str = "u1") -> str:
    return run(commands.cancel_job(job_id, user, fakes.deps)).status


def test_cancel_before_sagemaker_has_it_is_immediate(fakes: Fakes) -> None:
    job = create(fakes)  # validating_files, never launched
    assert _cancel(fakes, job.job_id) == "cancelled" and fakes.job(job.job_id).finished_at is not None
    assert fakes.sagemaker.stopped == []
    assert fakes.messages(job)[-2:] == ["Job cancellation requested", "Fine-tuning job cancelled"]
    put_file(fakes)
    launch_job(fakes, job)  # the launch that was queued finds it cancelled: nothing reaches SageMaker
    assert fakes.sagemaker.created == []
    assert fakes.events.types().count(JOB_CANCELLED) == 1


def test_cancel_of_a_queued_job_stops_sagemakers_copy(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    assert _cancel(fakes, job.job_id) == "cancelled"
    assert fakes.sagemaker.stopped == [job.job_id]
    sagemaker_state(fakes, job, "InProgress")  # late events change nothing, and announce nothing twice
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped")
    assert fakes.job(job.job_id).status == "cancelled"
    assert fakes.events.types().count(JOB_CANCELLED) == 1
    assert fakes.messages(job).count("Fine-tuning job cancelled") == 1


def test_a_launch_that_lands_after_the_cancel_stops_its_training_job(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    fakes.sagemaker.created.clear()
    assert run(fakes.jobs.transition(job.job_id, "cancelled"))  # the cancel won the race
    run(launch.create_training_job(fakes.deps, fakes.job(job.job_id), "s3://b/t"))
    assert fakes.sagemaker.stopped == [job.job_id]


def test_cancel_of_a_running_job_waits_for_stopped(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "InProgress")
    answered = run(commands.cancel_job(job.job_id, "u1", fakes.deps))
    assert answered.status == "running" and answered.cancel_requested_at is not None
    assert answered.openai()["cancel_requested_at"] == answered.cancel_requested_at
    assert _cancel(fakes, job.job_id) == "running"  # asked twice: one stop, one event
    assert fakes.sagemaker.stopped == [job.job_id]
    assert JOB_CANCELLED not in fakes.events.types()
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped")
    ended = fakes.job(job.job_id)
    assert ended.status == "cancelled" and ended.finished_at is not None
    assert fakes.messages(job).count("Job cancellation requested") == 1
    assert fakes.messages(job)[-1] == "Fine-tuning job cancelled"
    assert fakes.events.types().count(JOB_CANCELLED) == 1


def test_finished_jobs_cannot_be_cancelled(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "Failed", FailureReason="boom")
    with pytest.raises(InvalidRequest) as refused:
        _cancel(fakes, job.job_id)
    assert refused.value.code == "job_already_finished"
    with pytest.raises(NotFound):
        _cancel(fakes, job.job_id, user="u2")


def test_a_running_job_sagemaker_already_finished_is_refused(fakes: Fakes) -> None:
    put_file(fakes)
    job = create(fakes)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "InProgress")
    fakes.sagemaker.over.add(job.job_id)
    with pytest.raises(InvalidRequest) as refused:
        _cancel(fakes, job.job_id)
    assert refused.value.code == "job_already_finished"
    assert fakes.job(job.job_id).cancel_requested_at is None

