"""Training methods, continuing from an adapter, and a job's parts (pause, resume, retry), through training's handlers
with fakes for AWS (tests/support/training.py). The same against the real cluster:
tests/e2e/test_training_methods.py."""

from __future__ import annotations

from typing import Any

import pytest

from services.training import commands, pausing
from services.training.artifacts import checkpoint_id
from services.training.models import CreateJob, EstimateRequest, Job
from shared.errors import APIError, InvalidRequest, NotFound
from tests.support.training import TINY, Fakes, create, launch_job, put_file, run, sagemaker_state


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


def _checkpoint(fakes: Fakes, job: Job, step: int) -> None:
    prefix = f"training-jobs/{job.user_id}/{job.job_id}/checkpoints/checkpoint-{step:08d}/"
    for name in ("adapter.safetensors", "adapter_config.json", "trainer_state.json"):
        fakes.s3.objects[(fakes.launch.bucket, prefix + name)] = b"x"


def _running(fakes: Fakes, **body: Any) -> Job:
    put_file(fakes)
    job = create(fakes, **body)
    launch_job(fakes, job)
    sagemaker_state(fakes, job, "InProgress")
    return fakes.job(job.job_id)


def _succeeded(fakes: Fakes, **body: Any) -> Job:
    job = _running(fakes, **body)
    sagemaker_state(fakes, job, "Completed", ModelArtifacts={"S3ModelArtifacts": f"s3://b/{job.job_id}/model.tar.gz"})
    return fakes.job(job.job_id)


# ---- methods ------------------------------------------------------------------------------------------------

def test_a_dpo_job_sends_the_method_and_beta_to_the_trainer(fakes: Fakes) -> None:
    put_file(fakes, example_type="preference")
    job = create(fakes, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 2}}})
    launch_job(fakes, job)
    sent = fakes.sagemaker.created[0]["HyperParameters"]
    assert (sent["method"], sent["beta"], sent["n_epochs"]) == ("dpo", "0.25", "2")
    shown = fakes.job(job.job_id).openai()["method"]
    assert shown["type"] == "dpo" and shown["dpo"]["hyperparameters"]["beta"] == 0.25


def test_dpo_beta_auto_is_resolved_and_a_supervised_job_sends_no_method(fakes: Fakes) -> None:
    put_file(fakes, example_type="preference")
    put_file(fakes, file_id="file-2", example_type="chat")
    dpo = create(fakes, method={"type": "dpo"})
    sft = create(fakes, training_file="file-2")
    launch_job(fakes, dpo)
    launch_job(fakes, sft)
    by_name = {r["TrainingJobName"]: r["HyperParameters"] for r in fakes.sagemaker.created}
    assert by_name[dpo.job_id]["beta"] == "0.1"
    assert "method" not in by_name[sft.job_id] and "beta" not in by_name[sft.job_id]


@pytest.mark.parametrize(("method", "example_type", "words"), [
    ({"type": "supervised"}, "preference", "method dpo"),
    ({"type": "dpo"}, "chat", "preference pairs"),
    ({"type": "dpo"}, "text", "preference pairs"),
])
def test_a_file_of_the_other_layout_is_a_clear_400(fakes: Fakes, method: dict, example_type: str,
                                                   words: str) -> None:
    put_file(fakes, example_type=example_type)
    with pytest.raises(InvalidRequest) as refused:
        create(fakes, method=method)
    assert refused.value.status_code == 400 and refused.value.param == "training_file"
    assert words in refused.value.message


def test_a_layout_learnt_only_at_launch_fails_the_job_before_sagemaker(fakes: Fakes) -> None:
    job = create(fakes)  # the file is not known yet at creation
    put_file(fakes, example_type="preference")
    launch_job(fakes, job)
    failed = fakes.job(job.job_id)
    assert failed.status == "failed" and failed.error and failed.error["code"] == "invalid_training_file"
    assert "method dpo" in failed.error["message"] and fakes.sagemaker.created == []


def test_reinforcement_is_not_supported_yet(fakes: Fakes) -> None:
    put_file(fakes)
    with pytest.raises(InvalidRequest) as refused:
        create(fakes, method={"type": "reinforcement"})
    assert refused.value.code == "unsupported_method" and "not supported yet" in refused.value.message


def test_beta_out_of_bounds_is_refused_by_the_request_model() -> None:
    for beta in (0, 2.5, -1):
        with pytest.raises(ValueError, match="beta"):
            CreateJob.model_validate({"model": TINY, "training_file": "f",
                                      "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}}})


# ---- continuing from an ft: model or a checkpoint -------------------------------------------------------------

def test_a_job_on_an_ft_model_starts_from_its_adapter_on_the_same_base(fakes: Fakes) -> None:
    first = _succeeded(fakes, hyperparameters={"lora_r": 4})
    assert first.fine_tuned_model
    second = create(fakes, model=first.fine_tuned_model)
    launch_job(fakes, second)
    request = next(r for r in fakes.sagemaker.created if r["TrainingJobName"] == second.job_id)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["adapter"] == first.model_artifact
    stored = fakes.job(second.job_id)
    assert stored.model == first.fine_tuned_model and stored.base == TINY
    assert stored.hyperparameters["lora_r"] == 4  # the adapter's own rank
    assert stored.fine_tuned_model_name().startswith(f"ft:{TINY}:u1:")


def test_another_users_or_an_unknown_ft_model_is_a_404(fakes: Fakes) -> None:
    first = _succeeded(fakes)
    put_file(fakes, user="u2", file_id="file-9")
    for model in (str(first.fine_tuned_model), f"ft:{TINY}:u2::abcdefgh"):
        with pytest.raises(NotFound):
            run(commands.create_job(CreateJob(model=model, training_file="file-9"), "u2", fakes.deps))


def test_a_job_from_a_checkpoint_starts_from_that_folder(fakes: Fakes) -> None:
    first = _succeeded(fakes)
    _checkpoint(fakes, first, 5)
    checkpoint = checkpoint_id(first.job_id, 5)
    second = create(fakes, from_checkpoint=checkpoint)
    launch_job(fakes, second)
    request = next(r for r in fakes.sagemaker.created if r["TrainingJobName"] == second.job_id)
    adapter = next(c for c in request["InputDataConfig"] if c["ChannelName"] == "adapter")
    assert adapter["DataSource"]["S3DataSource"]["S3Uri"].endswith(f"/{first.job_id}/checkpoints/checkpoint-00000005/")
    stored = fakes.job(second.job_id)
    assert stored.from_checkpoint == checkpoint and stored.model == f"{first.fine_tuned_model}:ckpt-step-5"
    # Another user's checkpoint does not exist for them.
    put_file(fakes, user="u2", file_id="file-9")
    with pytest.raises(NotFound):
        run(commands.create_job(CreateJob(model=TINY, training_file="file-9", from_checkpoint=checkpoint), "u2",
                                fakes.deps))


# ---- pause, resume, retry ---------------------------------------------------------------------------------

def test_pause_then_resume_runs_a_second_part_from_the_checkpoint(fakes: Fakes) -> None:
    job = _running(fakes)
    paused = run(commands.pause_job(job.job_id, "u1", fakes.deps))
    assert paused.status == "pausing" and fakes.sagemaker.stopped == [job.job_id]
    _checkpoint(fakes, job, 3)
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped", BillableTimeInSeconds=60)
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped", BillableTimeInSeconds=60)  # delivered twice
    at_rest = fakes.job(job.job_id)
    assert at_rest.status == "paused" and at_rest.billed_micros and at_rest.parts[0]["outcome"] == "paused"
    assert at_rest.parts[0]["billed_seconds"] == 60

    resumed = run(commands.resume_job(job.job_id, "u1", fakes.deps))
    assert resumed.status == "queued" and resumed.parts[-1]["from_step"] == 3
    launch_job(fakes, resumed)
    second = fakes.sagemaker.created[-1]
    assert second["TrainingJobName"] == f"{job.job_id}-2"
    assert second["CheckpointConfig"] == fakes.sagemaker.created[0]["CheckpointConfig"]  # where the checkpoint is
    assert second["HyperParameters"] == fakes.sagemaker.created[0]["HyperParameters"]  # the same run: it resumes
    sagemaker_state(fakes, job, "Stopped", TrainingJobName=job.job_id)  # the first part's, repeated late: ignored
    sagemaker_state(fakes, job, "InProgress")
    sagemaker_state(fakes, job, "Completed", ModelArtifacts={"S3ModelArtifacts": "s3://b/x/model.tar.gz"},
                    BillableTimeInSeconds=30)
    done = fakes.job(job.job_id)
    assert done.status == "succeeded"
    assert [(p["part"], p["kind"], p["outcome"]) for p in done.parts] == [(1, "start", "paused"),
                                                                          (2, "resume", "succeeded")]
    shown = done.openai()
    assert [p["billed_seconds"] for p in shown["parts"]] == [60, 30] and shown["billed_cost_usd"] > 0


@pytest.mark.parametrize("status", ["validating_files", "queued", "succeeded"])
def test_pausing_a_job_that_is_not_running_is_a_400(fakes: Fakes, status: str) -> None:
    put_file(fakes)
    job = create(fakes)
    fakes.jobs.jobs[job.job_id] = job.model_copy(update={"status": status})
    with pytest.raises(InvalidRequest) as refused:
        run(commands.pause_job(job.job_id, "u1", fakes.deps))
    assert refused.value.code == "invalid_job_state"
    with pytest.raises(InvalidRequest):
        run(commands.resume_job(job.job_id, "u1", fakes.deps))


def test_another_users_job_cannot_be_paused(fakes: Fakes) -> None:
    job = _running(fakes)
    with pytest.raises(NotFound):
        run(commands.pause_job(job.job_id, "u2", fakes.deps))


def test_a_pausing_job_cancelled_ends_cancelled_not_paused(fakes: Fakes) -> None:
    job = _running(fakes)
    run(commands.pause_job(job.job_id, "u1", fakes.deps))
    run(commands.cancel_job(job.job_id, "u1", fakes.deps))
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped")
    assert fakes.job(job.job_id).status == "cancelled"


def test_a_failed_job_retried_resumes_from_its_newest_checkpoint(fakes: Fakes) -> None:
    job = _running(fakes)
    _checkpoint(fakes, job, 2)
    _checkpoint(fakes, job, 4)
    sagemaker_state(fakes, job, "Failed", FailureReason="AlgorithmError: boom")
    retried = run(commands.retry_job(job.job_id, "u1", fakes.deps, max_cost_usd=5.0))
    assert retried["status"] == "queued" and retried["error"] is None
    assert retried["retry"]["from_step"] == 4 and retried["retry"]["checkpoint"] == checkpoint_id(job.job_id, 4)
    assert fakes.job(job.job_id).max_cost_usd == 5.0
    launch_job(fakes, fakes.job(job.job_id))
    assert fakes.sagemaker.created[-1]["TrainingJobName"] == f"{job.job_id}-2"


def test_a_retry_without_a_checkpoint_starts_over_and_says_so(fakes: Fakes) -> None:
    job = _running(fakes)
    run(commands.cancel_job(job.job_id, "u1", fakes.deps))
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped")
    retried = run(commands.retry_job(job.job_id, "u1", fakes.deps))
    assert retried["retry"]["from_step"] is None and "starting over" in retried["retry"]["message"]


def test_only_failed_or_cancelled_jobs_are_retried(fakes: Fakes) -> None:
    job = _succeeded(fakes)
    with pytest.raises(InvalidRequest) as refused:
        run(commands.retry_job(job.job_id, "u1", fakes.deps))
    assert refused.value.code == "invalid_job_state"


def test_a_spent_budget_needs_a_new_cap_to_go_on(fakes: Fakes) -> None:
    job = _running(fakes, max_cost_usd=0.01)
    run(commands.pause_job(job.job_id, "u1", fakes.deps))
    sagemaker_state(fakes, job, "Stopped", SecondaryStatus="Stopped", BillableTimeInSeconds=36000)
    with pytest.raises(APIError) as refused:
        run(pausing.resume_job(fakes.job(job.job_id), fakes.deps))
    assert refused.value.code == "budget_spent"
    resumed = run(commands.resume_job(job.job_id, "u1", fakes.deps, max_cost_usd=1.0))
    assert resumed.status == "queued"


def test_an_estimate_on_an_ft_model_is_its_base_models(fakes: Fakes) -> None:
    first = _succeeded(fakes)
    on_ft = run(commands.estimate_job(EstimateRequest(model=str(first.fine_tuned_model), training_file="file-1"),
                                      "u1", fakes.deps))
    on_base = run(commands.estimate_job(EstimateRequest(model=TINY, training_file="file-1"), "u1", fakes.deps))
    assert on_ft["model"] == TINY and on_ft["estimated_cost_usd"] == on_base["estimated_cost_usd"]
    with pytest.raises(NotFound):  # another user's model does not exist for them
        run(commands.estimate_job(EstimateRequest(model=str(first.fine_tuned_model), training_file="file-1"),
                                  "u2", fakes.deps))
