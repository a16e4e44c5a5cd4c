"""Per-user limits (services/training/limits.py), the files check at creation (files_directory.py) and an account
deleted while a launch is in flight (user_deletion.py), with the unit tests' fakes. The counters' conditional
writes against DynamoDB, under real concurrency, are tests/integration/test_training_limits.py's."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.training import commands, limits
from services.training.deps import Deps
from services.training.files_directory import FileSeen
from services.training.limits import Limits, Usage
from services.training.models import CreateJob, Job
from services.training.sagemaker_state import on_sagemaker_state
from services.training.settings import Settings
from services.training.user_deletion import delete_user_data
from shared.contracts.auth_events import UserDeleted
from shared.contracts.sagemaker_events import TrainingJobStateChanged
from shared.errors import APIError, InvalidRequest
from tests.support.training import (
    CATALOG,
    TINY,
    FakeJobsStore,
    Fakes,
    FakeS3,
    FakeSageMaker,
    launch_job,
    put_file,
    run,
)


class FakeUsage:
    """usage_store.UsageStore in memory: the check and the reservation as one step, as its transaction is."""

    def __init__(self) -> None:
        self.counters: dict[str, Usage] = {}
        self.jobs: FakeJobsStore | None = None

    async def usage(self, user_id: str) -> Usage:
        return self.counters.get(user_id, Usage())

    async def create_within(self, job: Job, rules: Limits) -> None:
        now = await self.usage(job.user_id)
        refused = limits.refusal(rules, now, job.reserved_micros or 0)
        if refused is not None:
            raise refused
        assert self.jobs is not None
        await self.jobs.create(job)
        self.counters[job.user_id] = dataclasses.replace(now, active_jobs=now.active_jobs + 1,
                                                         reserved_micros=now.reserved_micros + (job.reserved_micros
                                                                                                or 0))

    async def forget(self, user_id: str) -> None:
        self.counters.pop(user_id, None)


class FakeFiles:
    def __init__(self, answers: dict[str, FileSeen | None]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def find(self, file_id: str, bearer_token: str) -> FileSeen | None:
        self.asked.append((file_id, bearer_token))
        return self.answers.get(file_id, FileSeen(found=False))


class FakeDeletedJobs:
    def __init__(self) -> None:
        self.owners: dict[str, str] = {}
        self.owed: dict[str, set[str]] = {}

    async def remember(self, user_id: str, job_ids: list[str]) -> None:
        self.owners.update(dict.fromkeys(job_ids, user_id))
        self.owed.setdefault(user_id, set()).update(job_ids)

    async def stops_owed(self, user_id: str) -> list[str]:
        return sorted(self.owed.get(user_id, set()))

    async def stops_done(self, user_id: str) -> None:
        self.owed.pop(user_id, None)

    async def owner_of(self, job_id: str) -> str | None:
        return self.owners.get(job_id)

    async def forget(self, job_id: str) -> None:
        self.owners.pop(job_id, None)


class ListingS3(FakeS3):
    """FakeS3 that also lists its objects' versions and deletes them, as shared.s3's prefix deletion needs."""

    def get_paginator(self, operation_name: str) -> Any:
        objects = self.objects

        class Versions:
            async def paginate(self, *, Bucket: str, Prefix: str) -> AsyncIterator[dict[str, Any]]:
                yield {"Versions": [{"Key": k, "VersionId": "v1"} for b, k in list(objects)
                                    if b == Bucket and k.startswith(Prefix)]}

        assert operation_name == "list_object_versions"
        return Versions()

    async def delete_objects(self, *, Bucket: str, Delete: dict[str, Any]) -> dict[str, Any]:
        for target in Delete["Objects"]:
            self.objects.pop((Bucket, target["Key"]), None)
        return {}


class JobsThatCanBeDeleted(FakeJobsStore):
    """As the DynamoDB store: setting a field of a job that is gone changes nothing (no partial job appears)."""

    async def set_fields(self, job_id: str, **changes: Any) -> None:
        if job_id in self.jobs:
            await super().set_fields(job_id, **changes)


@dataclasses.dataclass
class World:
    fakes: Fakes
    usage: FakeUsage
    files: FakeFiles
    deleted: FakeDeletedJobs
    rules: Limits

    @property
    def deps(self) -> Deps:
        return dataclasses.replace(self.fakes.deps, usage=self.usage, files=self.files, deleted_jobs=self.deleted,
                                   limits=self.rules)

    def create(self, user: str = "u1", token: str | None = "token-u1", **body: Any) -> Job:
        cmd = CreateJob.model_validate({"model": TINY, "training_file": "file-1", **body})
        return run(commands.create_job(cmd, user, self.deps, token))


def world(rules: Limits | None = None, files: dict[str, FileSeen | None] | None = None) -> World:
    fakes = Fakes(jobs=JobsThatCanBeDeleted(), s3=ListingS3())
    usage = FakeUsage()
    usage.jobs = fakes.jobs
    return World(fakes, usage, FakeFiles(files or {}), FakeDeletedJobs(), rules or Limits())


# ---- the files check ----------------------------------------------------------------------------------------

def test_a_file_nobody_has_is_refused_at_creation_with_openais_error() -> None:
    w = world()
    with pytest.raises(InvalidRequest) as refused:
        w.create(training_file="file-nope")
    assert (refused.value.status_code, refused.value.code, refused.value.param) == (
        400, "invalid_training_file", "training_file")
    assert w.files.asked == [("file-nope", "token-u1")]  # asked with the caller's own credential
    assert w.fakes.jobs.jobs == {} and w.fakes.commands.sent == []


def test_another_users_validation_file_is_refused_without_asking_files() -> None:
    w = world()
    put_file(w.fakes, user="u1")
    put_file(w.fakes, user="u2", file_id="file-2")
    with pytest.raises(InvalidRequest) as refused:
        w.create(validation_file="file-2")
    assert (refused.value.code, refused.value.param) == ("invalid_validation_file", "validation_file")
    assert w.files.asked == []


def test_a_file_uploaded_a_moment_ago_is_accepted_when_files_confirms_it() -> None:
    w = world(files={"file-1": FileSeen(found=True, purpose="fine-tune", status="uploaded")})
    job = w.create()  # the projection has not heard of it yet
    assert job.status == "validating_files" and len(w.fakes.commands.sent) == 1


def test_a_file_of_another_purpose_is_refused_as_files_describes_it() -> None:
    w = world(files={"file-1": FileSeen(found=True, purpose="assistants", status="processed")})
    with pytest.raises(InvalidRequest) as refused:
        w.create()
    assert refused.value.code == "invalid_file_purpose"


def test_when_files_cannot_answer_the_launch_decides() -> None:
    w = world(files={"file-1": None})
    assert w.create().status == "validating_files"


# ---- limits -------------------------------------------------------------------------------------------------

def test_active_jobs_past_the_limit_are_a_429() -> None:
    w = world(Limits(max_active_jobs=2))
    put_file(w.fakes)
    w.create()
    w.create()
    with pytest.raises(APIError) as refused:
        w.create()
    assert (refused.value.status_code, refused.value.code) == (429, "too_many_active_jobs")
    assert "2 active" in refused.value.message and len(w.fakes.jobs.jobs) == 2
    put_file(w.fakes, user="u2", file_id="file-2")
    w.create(user="u2", training_file="file-2")  # another user's count is their own


def test_the_monthly_spend_counts_billed_and_reserved_and_names_the_figures() -> None:
    price = CATALOG.instance("ml.m5.large").price_per_hour  # type: ignore[union-attr]
    w = world(Limits(monthly_spend_limit_usd=7.5 + price / 2))  # room for half an hour of the instance
    put_file(w.fakes)
    w.usage.counters["u1"] = Usage(active_jobs=1, reserved_micros=3_000_000, billed_micros=4_500_000)
    with pytest.raises(APIError) as refused:
        w.create(instance_type="ml.m5.large")  # no budget: its cap is the launch's 1 h maximum run time
    assert (refused.value.status_code, refused.value.code, refused.value.param) == (
        402, "spend_limit_reached", "max_cost_usd")
    message = refused.value.message
    assert "$4.50 billed" in message and "$3.00 reserved" in message and f"${7.5 + price / 2:.2f}" in message
    job = w.create(instance_type="ml.m5.large", max_cost_usd=price * 0.4)  # a budget that fits what is left
    assert job.reserved_micros is not None and job.reserved_micros <= limits.usd_to_micros(price * 0.4)


def test_a_job_without_a_budget_reserves_its_run_time_cap() -> None:
    instance = CATALOG.instance("ml.m5.large")
    assert instance is not None
    reserved = limits.reserved_micros(instance, {"MaxRuntimeInSeconds": 7200})
    assert reserved == limits.usd_to_micros(2 * instance.price_per_hour)


def test_the_bill_is_the_billable_time_at_the_on_demand_price() -> None:
    instance = CATALOG.instance("ml.m5.large")
    assert instance is not None
    detail = type("Detail", (), {"BillableTimeInSeconds": 1800, "TrainingTimeInSeconds": 3600})()
    assert limits.billed_micros(detail, instance) == limits.usd_to_micros(instance.price_per_hour / 2)
    never_ran = type("Detail", (), {})()
    assert limits.billed_micros(never_ran, instance) == 0


def test_an_instance_type_off_the_allow_list_is_a_400_at_creation_and_estimate() -> None:
    w = world(Limits(allowed_instance_types=frozenset({"ml.g5.xlarge"})))
    put_file(w.fakes)
    with pytest.raises(InvalidRequest) as refused:
        w.create(instance_type="ml.m5.large")
    assert (refused.value.code, refused.value.param) == ("instance_type_not_allowed", "instance_type")
    assert "ml.g5.xlarge" in refused.value.message
    with pytest.raises(InvalidRequest):
        run(commands.dry_run_job(CreateJob(model=TINY, training_file="file-1", instance_type="ml.m5.large"), "u1",
                                 w.deps))


def test_the_allow_list_names_only_catalog_types() -> None:
    assert limits.parse_instance_types(" ml.m5.large, ml.g5.xlarge ,", CATALOG) == {"ml.m5.large", "ml.g5.xlarge"}
    with pytest.raises(ValueError, match=r"ml\.nope"):
        limits.parse_instance_types("ml.nope", CATALOG)


def test_users_see_their_limits_and_where_they_stand() -> None:
    w = world(Limits(max_active_jobs=3, monthly_spend_limit_usd=50.0))
    w.usage.counters["u1"] = Usage(active_jobs=1, reserved_micros=2_000_000, billed_micros=10_000_000)
    shown = run(commands.user_limits("u1", w.deps))
    assert shown["max_active_jobs"] == 3 and shown["active_jobs"] == 1
    assert (shown["billed_this_month_usd"], shown["reserved_by_active_jobs_usd"], shown["spend_left_usd"]) == (
        10.0, 2.0, 38.0)


# ---- an account deleted while a launch is in flight ---------------------------------------------------------

class SageMakerThatLandsAfterTheDeletion(FakeSageMaker):
    """CreateTrainingJob in flight while user.deleted is handled: the deletion runs (and its stop finds no training
    job yet), then the create lands."""

    def __init__(self, during_create: Any) -> None:
        super().__init__()
        self.during_create = during_create

    async def create_training_job(self, **request: Any) -> dict[str, Any]:
        await self.during_create()
        return await super().create_training_job(**request)


def test_a_launch_that_lands_after_the_accounts_deletion_stops_its_training_job() -> None:
    w = world()
    put_file(w.fakes)
    job = w.create()

    async def delete_account() -> None:
        await delete_user_data(UserDeleted(user_id="u1", until=0), w.deps)

    w.fakes.sagemaker = SageMakerThatLandsAfterTheDeletion(delete_account)
    launch_job(w.fakes, job)
    deps = w.deps
    assert [r["TrainingJobName"] for r in w.fakes.sagemaker.created] == [job.job_id]  # it landed...
    assert w.fakes.sagemaker.stopped == [job.job_id]  # ...and was stopped by its own launch
    assert w.fakes.jobs.jobs == {} and run(deps.jobs.get(job.job_id)) is None  # no partial job appeared
    assert w.deleted.owners == {job.job_id: "u1"}  # kept until SageMaker says the training job ended

    # SageMaker uploads the model after the stop, then says Stopped: what it wrote goes too, and so does the note.
    w.fakes.s3.objects["b", f"training-jobs/u1/{job.job_id}/output/model.tar.gz"] = b"late"
    w.fakes.s3.objects["b", "training-jobs/u2/ftjob-other/output/model.tar.gz"] = b"not theirs"
    run(on_sagemaker_state(TrainingJobStateChanged(TrainingJobName=job.job_id, TrainingJobStatus="Stopped"), w.deps))
    assert list(w.fakes.s3.objects) == [("b", "training-jobs/u2/ftjob-other/output/model.tar.gz")]
    assert w.deleted.owners == {}


def test_a_deletion_retried_after_a_failed_stop_still_sends_it() -> None:
    w = world()
    put_file(w.fakes)
    job = w.create()
    launch_job(w.fakes, job)  # SageMaker has it
    sagemaker = w.fakes.sagemaker
    calls = {"n": 0}
    real_stop = sagemaker.stop_training_job

    async def throttled_once(*, TrainingJobName: str) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("throttled")
        return await real_stop(TrainingJobName=TrainingJobName)

    sagemaker.stop_training_job = throttled_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        run(delete_user_data(UserDeleted(user_id="u1", until=0), w.deps))
    assert w.fakes.jobs.jobs == {}  # the job is gone: only the owed stops remember it
    run(delete_user_data(UserDeleted(user_id="u1", until=0), w.deps))  # the message, delivered again
    assert sagemaker.stopped == [job.job_id] and w.deleted.owed == {}


@pytest.mark.parametrize(("value", "active", "spend"), [("", None, None), ("none", None, None), ("5", 5, 5.0)])
def test_a_limit_set_empty_or_none_is_no_limit(monkeypatch: pytest.MonkeyPatch, value: str, active: int | None,
                                               spend: float | None) -> None:
    monkeypatch.setenv("MAX_ACTIVE_JOBS_PER_USER", value)
    monkeypatch.setenv("MONTHLY_SPEND_LIMIT_USD", value)
    settings = Settings()
    assert (settings.max_active_jobs_per_user, settings.monthly_spend_limit_usd) == (active, spend)


def test_by_default_three_active_jobs_and_no_spend_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAX_ACTIVE_JOBS_PER_USER", raising=False)
    monkeypatch.delenv("MONTHLY_SPEND_LIMIT_USD", raising=False)
    assert (Settings().max_active_jobs_per_user, Settings().monthly_spend_limit_usd) == (3, None)
