"""training's refusals at creation against the embedded AWS and the files service over real HTTP: a job on an
unknown or another user's file (400 `invalid_training_file`, as the openai SDK reads it), per-user limits on active
jobs (429) and monthly spend (402) under concurrent creations, the instance type allow-list (400), and the limits
as `GET /api/catalog` shows them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest

from services.training.bootstrap import build_deps
from services.training.limits import Limits, Usage
from services.training.models import Job
from services.training.settings import Settings
from shared.aws import AwsClients
from tests.support.accounts import bearer, register
from tests.support.files import GOOD, upload
from tests.support.servers import serve

TINY = "llm-tuner/tiny-chat"
MAX_ACTIVE = 3
SPEND_LIMIT_USD = 1.0


@pytest.fixture(scope="module")
def api(files_url: str) -> Iterator[str]:
    """training with limits, asking the real files service about files its projection has not heard of."""
    from services.training.app import build_app

    settings = Settings(files_url=files_url, max_active_jobs_per_user=MAX_ACTIVE,
                        monthly_spend_limit_usd=SPEND_LIMIT_USD, allowed_instance_types="ml.m5.large")
    with serve(build_app(settings)) as url:
        yield url


def _user_with_file(auth_url: str, files_url: str) -> tuple[dict[str, Any], str]:
    """A new user and a fine-tune file just uploaded (no worker has run: training's projection has not heard of
    it, so training must ask files)."""
    session = register(auth_url)
    uploaded = upload(files_url, session, GOOD.encode())
    assert uploaded.status_code == 200, uploaded.text
    return session, str(uploaded.json()["id"])


def _create(api: str, session: dict[str, Any], file_id: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{api}/v1/fine_tuning/jobs", headers=bearer(session), timeout=60,
                      json={"model": TINY, "training_file": file_id, **body})


def _create_at_once(api: str, session: dict[str, Any], file_id: str, n: int, **body: Any) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: _create(api, session, file_id, **body), range(n)))


def _sdk(api: str, session: dict[str, Any]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api}/v1", api_key=session["access_token"], max_retries=0)


def test_a_job_on_a_file_nobody_has_is_a_400_the_sdk_reads(api: str, auth_url: str) -> None:
    session = register(auth_url)
    with pytest.raises(openai.BadRequestError) as refused:
        _sdk(api, session).fine_tuning.jobs.create(model=TINY, training_file="file-doesnotexist0000000000")
    assert (refused.value.status_code, refused.value.code, refused.value.param) == (
        400, "invalid_training_file", "training_file")
    envelope = refused.value.response.json()
    assert set(envelope["error"]) == {"message", "type", "param", "code"}
    assert envelope["error"]["type"] == "invalid_request_error"
    assert _sdk(api, session).fine_tuning.jobs.list().data == []


def test_another_users_file_is_a_400_and_the_owners_just_uploaded_file_is_accepted(
        api: str, auth_url: str, files_url: str) -> None:
    owner, file_id = _user_with_file(auth_url, files_url)
    stranger = register(auth_url)
    with pytest.raises(openai.BadRequestError) as refused:
        _sdk(api, stranger).fine_tuning.jobs.create(model=TINY, training_file=file_id)
    assert (refused.value.code, refused.value.param) == ("invalid_training_file", "training_file")
    with pytest.raises(openai.BadRequestError) as as_validation:
        _sdk(api, stranger).fine_tuning.jobs.create(model=TINY, training_file="file-doesnotexist0000000000",
                                                    validation_file=file_id)
    assert as_validation.value.param in ("training_file", "validation_file")
    job = _sdk(api, owner).fine_tuning.jobs.create(model=TINY, training_file=file_id, extra_body={
        "max_cost_usd": 0.05})
    assert job.status == "validating_files" and job.training_file == file_id


def test_concurrent_creations_never_pass_the_active_jobs_limit(api: str, auth_url: str, files_url: str) -> None:
    session, file_id = _user_with_file(auth_url, files_url)
    answers = _create_at_once(api, session, file_id, 8, max_cost_usd=0.05)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * MAX_ACTIVE + [429] * (8 - MAX_ACTIVE), [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 429).json()["error"]
    assert refused["code"] == "too_many_active_jobs" and f"limit is {MAX_ACTIVE}" in refused["message"]
    limits = httpx.get(f"{api}/api/catalog", headers=bearer(session)).json()["limits"]
    assert (limits["active_jobs"], limits["max_active_jobs"]) == (MAX_ACTIVE, MAX_ACTIVE)

    # A job that ends gives its place back: the next creation passes.
    first = next(r for r in answers if r.status_code == 200).json()["id"]
    cancelled = httpx.post(f"{api}/v1/fine_tuning/jobs/{first}/cancel", headers=bearer(session))
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    assert _create(api, session, file_id, max_cost_usd=0.05).status_code == 200
    assert _create(api, session, file_id, max_cost_usd=0.05).status_code == 429


def test_concurrent_creations_never_pass_the_monthly_spend_limit(api: str, auth_url: str, files_url: str) -> None:
    session, file_id = _user_with_file(auth_url, files_url)
    answers = _create_at_once(api, session, file_id, 6, max_cost_usd=0.4)  # two fit in $1, a third does not
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200] + [402] * 4, [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 402).json()["error"]
    assert refused["code"] == "spend_limit_reached" and refused["param"] == "max_cost_usd"
    assert "$1.00" in refused["message"] and "reserved by your active jobs" in refused["message"]
    limits = httpx.get(f"{api}/api/catalog", headers=bearer(session)).json()["limits"]
    assert limits["monthly_spend_limit_usd"] == SPEND_LIMIT_USD
    assert 0.7 < limits["reserved_by_active_jobs_usd"] <= 0.8 and limits["billed_this_month_usd"] == 0
    # Without a budget a job reserves its whole maximum run time (24 h here): far past what is left.
    assert _create(api, session, file_id).status_code == 402


def test_an_instance_type_off_the_allow_list_is_a_400(api: str, auth_url: str, files_url: str) -> None:
    session, file_id = _user_with_file(auth_url, files_url)
    refused = _create(api, session, file_id, instance_type="ml.g5.xlarge", max_cost_usd=0.5)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "instance_type_not_allowed"
    assert refused.json()["error"]["param"] == "instance_type"
    shown = httpx.get(f"{api}/api/catalog", headers=bearer(session)).json()["limits"]
    assert shown["allowed_instance_types"] == ["ml.m5.large"]


async def _end_a_job_twice(user_id: str) -> tuple[Usage, Usage, bool, bool]:
    """A job made within limits, then ended by two writers (as a Completed event and a late Failed would): the
    usage while it ran and after, and whether each ending was written."""
    settings = Settings()
    aws = AwsClients(settings)
    try:
        deps = await build_deps(aws, settings)
        assert deps.usage is not None
        now = datetime.now(UTC)
        job = Job(job_id=f"ftjob-{os.urandom(12).hex()}", user_id=user_id, created_at=now.isoformat(),
                  created_at_unix=int(now.timestamp()), model=TINY, training_file="file-x", hyperparameters={},
                  seed=1, instance_type="ml.m5.large", reserved_micros=400_000)
        await deps.usage.create_within(job, Limits(max_active_jobs=1, monthly_spend_limit_usd=1.0))
        assert await deps.jobs.transition(job.job_id, "queued")  # not an end: nothing moves
        running = await deps.usage.usage(user_id)
        first = await deps.jobs.transition(job.job_id, "succeeded", bill_micros=123_456)
        second = await deps.jobs.transition(job.job_id, "failed", bill_micros=999_999)
        return running, await deps.usage.usage(user_id), first, second
    finally:
        await aws.close()


def test_a_jobs_end_releases_its_reservation_and_counts_its_bill_once(provisioned: dict[str, Any]) -> None:
    running, ended, first, second = asyncio.run(_end_a_job_twice(f"user-{os.urandom(6).hex()}"))
    assert running == Usage(active_jobs=1, reserved_micros=400_000, billed_micros=0)
    assert (first, second) == (True, False)
    assert ended == Usage(active_jobs=0, reserved_micros=0, billed_micros=123_456)
