"""The dashboard's training methods and a job's lifecycle beyond one run, in a real headless Chromium against a
cluster whose trainers hold after their first checkpoint until the test releases them (`held_cluster`): a running
job paused and resumed from its page, ending succeeded with its two parts listed; "Continue training" from a
succeeded job's page creating a job on its fine-tuned model, and "Continue from this checkpoint" one from its
checkpoint, both succeeding; the train page with DPO picked offering preference files only (and the request carrying
the method in OpenAI's shape); a failed job retried from its checkpoint; a DPO job's reward accuracy on its page.

A job the test does not mean to hold is released right after it is created. Each test saves full-page screenshots
under test-artifacts/screenshots/<test>/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from deploy.local.demo_model import DEMO_MODEL_ID
from tests.e2e.browser import PASSWORD, Screenshots, new_email, new_page, sign_in
from tests.support.polling import wait_for
from trainer_image.demo_model import make_demo_dataset

pytestmark = pytest.mark.e2e

JOB_DEADLINE_S = 420
JOB_DEADLINE_MS = JOB_DEADLINE_S * 1000
CHECKPOINT_DEADLINE_S = 300
PAUSE_DEADLINE_MS = 120_000
TERMINAL = {"succeeded", "failed", "cancelled"}


class Account:
    """A person signed up through the API: the same email signs in to the dashboard."""

    def __init__(self, base_url: str) -> None:
        self.email = new_email()
        self.http = httpx.Client(base_url=base_url, timeout=60)
        grant = self.http.post("/auth/register", json={"email": self.email, "password": PASSWORD})
        assert grant.status_code == 201, grant.text
        key = self.http.post("/auth/api-keys", json={"name": "e2e"},
                             headers={"Authorization": f"Bearer {grant.json()['access_token']}"})
        assert key.status_code == 201, key.text
        self.http.headers["Authorization"] = f"Bearer {key.json()['key']}"

    def upload(self, name: str, examples: list[dict[str, Any]]) -> str:
        """Upload a fine-tune file and wait until it is validated; returns its id."""
        body = "".join(json.dumps(e) + "\n" for e in examples).encode()
        created = self.http.post("/v1/files", data={"purpose": "fine-tune"},
                                 files={"file": (name, body, "application/jsonl")})
        assert created.status_code == 200, created.text
        file_id = str(created.json()["id"])
        found = wait_for(lambda: self.http.get(f"/v1/files/{file_id}").json(),
                         lambda f: f["status"] in {"processed", "error"}, f"validation of {name}", 60)
        assert found["status"] == "processed", found
        return file_id

    def job(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        return found

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        created = self.http.post("/v1/fine_tuning/jobs", json=body)
        assert created.status_code == 200, created.text
        job: dict[str, Any] = created.json()
        return job

    def wait_until_finished(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = wait_for(lambda: self.job(job_id), lambda j: j["status"] in TERMINAL, f"job {job_id}",
                                       JOB_DEADLINE_S)
        return job


def launch_from_train_page(page: Page, held_cluster: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Click Launch on the train page: (the job the API answered, released at once; the request the page sent)."""
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/v1/fine_tuning/jobs")) as answer:
        page.get_by_role("button", name="Launch fine-tuning job").click()
    assert answer.value.ok, answer.value.text()
    job: dict[str, Any] = answer.value.json()
    held_cluster.release(job["id"])
    sent: dict[str, Any] = json.loads(answer.value.request.post_data or "{}")
    return job, sent


@pytest.fixture
def account(held_cluster: Any) -> Iterator[Account]:
    person = Account(held_cluster.base_url)
    yield person
    person.http.close()


def _preference_pairs(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"Greet person {i}.", "chosen": f"Hello, person {i}!", "rejected": "No."} for i in range(n)]


def _open(page: Page, base_url: str, hash_path: str) -> None:
    page.goto(f"{base_url}/#{hash_path}")


def test_a_running_job_is_paused_and_resumed_from_its_page(held_cluster: Any, account: Account, browser: Browser,
                                                           shots: Screenshots) -> None:
    training_file = account.upload("train.jsonl", make_demo_dataset(20, seed=21))
    # GIVEN a job held after its first checkpoint (not released: it keeps running until paused)
    job_id = account.create_job({"model": DEMO_MODEL_ID, "training_file": training_file})["id"]
    with new_page(browser) as (_, page):
        sign_in(page, held_cluster.base_url, account.email)
        _open(page, held_cluster.base_url, f"/jobs/{job_id}")
        wait_for(lambda: account.http.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints").json()["data"], bool,
                 f"the first checkpoint of {job_id}", CHECKPOINT_DEADLINE_S)
        pause = page.get_by_role("button", name="Pause", exact=True)
        expect(pause).to_be_visible(timeout=60_000)
        shots.take(page, "running")

        # WHEN it is paused, THEN the page shows it paused and offers Resume
        pause.click()
        expect(page.locator(".page-title [data-status=paused]")).to_be_visible(timeout=PAUSE_DEADLINE_MS)
        resume = page.get_by_role("button", name="Resume", exact=True)
        expect(resume).to_be_visible()
        expect(pause).to_be_hidden()
        shots.take(page, "paused")

        # WHEN it is resumed, its next part (under the same job) is let run through
        resume.click()
        parts = wait_for(lambda: account.job(job_id)["parts"], lambda p: len(p) == 2, f"the second part of {job_id}",
                         30)
        held_cluster.release(parts[-1]["sagemaker_job_name"])

        # THEN it ends succeeded, its two parts listed, the loss from both on one chart
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=JOB_DEADLINE_MS)
        rows = page.locator("tr[data-part]")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_have_attribute("data-kind", "start")
        expect(rows.nth(1)).to_have_attribute("data-kind", "resume")
        expect(rows.nth(1).locator("[data-status=succeeded]")).to_be_visible()
        expect(page.get_by_test_id("billed-total")).to_be_visible()
        resumed_from = parts[-1]["from_step"]
        chart = page.locator(".chart-svg").first
        expect(chart).not_to_have_attribute("data-points", "0")
        if resumed_from is not None:
            expect(chart).to_have_attribute("data-markers", "1")
        shots.take(page, "succeeded")
    finished = account.job(job_id)
    assert finished["status"] == "succeeded" and [p["kind"] for p in finished["parts"]] == ["start", "resume"]
    steps = [p["step"] for p in account.http.get(f"/api/jobs/{job_id}/metrics").json()["data"]]
    assert steps and max(steps) > (resumed_from or 0), (steps, resumed_from)


def test_continue_training_from_a_succeeded_job_trains_on_its_fine_tuned_model(
        held_cluster: Any, account: Account, browser: Browser, shots: Screenshots) -> None:
    training_file = account.upload("train.jsonl", make_demo_dataset(20, seed=22))
    first = account.create_job({"model": DEMO_MODEL_ID, "training_file": training_file})
    held_cluster.release(first["id"])
    done = account.wait_until_finished(first["id"])
    assert done["status"] == "succeeded", done["error"]
    fine_tuned = done["fine_tuned_model"]

    with new_page(browser) as (_, page):
        sign_in(page, held_cluster.base_url, account.email)
        _open(page, held_cluster.base_url, f"/jobs/{first['id']}")
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible()
        # Each checkpoint row offers to continue from it (on the model the job trained).
        checkpoint_link = page.locator("tr[data-checkpoint-id]").first.get_by_role("link")
        expect(checkpoint_link).to_have_attribute("href", re.compile(r"checkpoint=ftckpt_"))
        shots.take(page, "succeeded")

        # WHEN "Continue training" is followed, THEN the train page says what the job continues from
        page.get_by_role("link", name="Continue training").click()
        expect(page.get_by_role("heading", name="Train a model")).to_be_visible()
        expect(page.get_by_test_id("continue-from")).to_contain_text(f"Continue from {fine_tuned}")
        expect(page.locator(f"label[data-model='{DEMO_MODEL_ID}'] input")).to_be_checked()
        expect(page.locator("#training-file")).to_have_value(training_file)
        expect(page.get_by_test_id("estimate-cost")).to_contain_text("$")
        shots.take(page, "train-continue")

        second, sent = launch_from_train_page(page, held_cluster)
        assert sent["model"] == fine_tuned and sent["method"]["type"] == "supervised", sent
        assert "hyperparameters" not in sent, sent

        # THEN the new job trains on the fine-tuned model and succeeds
        expect(page).to_have_url(re.compile(rf"#/jobs/{second['id']}$"))
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=JOB_DEADLINE_MS)
        shots.take(page, "continued-succeeded")

        # WHEN "Continue from this checkpoint" is followed on the first job's page, THEN the new job starts there
        _open(page, held_cluster.base_url, f"/jobs/{first['id']}")
        row = page.locator("tr[data-checkpoint-id]").first
        checkpoint = row.get_attribute("data-checkpoint-id")
        row.get_by_role("link", name=re.compile("Continue from this checkpoint")).click()
        expect(page.get_by_test_id("continue-from")).to_contain_text(f"Continue from checkpoint {checkpoint}")
        expect(page.get_by_test_id("estimate-cost")).to_contain_text("$")
        third, sent = launch_from_train_page(page, held_cluster)
        assert sent["from_checkpoint"] == checkpoint and sent["model"] == DEMO_MODEL_ID, sent
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=JOB_DEADLINE_MS)
        shots.take(page, "from-checkpoint-succeeded")
    continued = account.job(second["id"])
    assert continued["model"] == fine_tuned and continued["status"] == "succeeded", continued
    assert continued["base_model"] == DEMO_MODEL_ID
    from_checkpoint = account.job(third["id"])
    assert from_checkpoint["from_checkpoint"] == checkpoint and from_checkpoint["status"] == "succeeded"


def test_the_train_page_with_dpo_offers_preference_files_only(held_cluster: Any, account: Account, browser: Browser,
                                                               shots: Screenshots) -> None:
    chat_file = account.upload("chat.jsonl", make_demo_dataset(12, seed=23))
    with new_page(browser) as (_, page):
        sign_in(page, held_cluster.base_url, account.email)
        _open(page, held_cluster.base_url, "/train")
        options = page.locator("#training-file option")
        expect(options).to_have_count(1)
        expect(options.first).to_have_attribute("value", chat_file)
        expect(page.get_by_label("Beta")).to_be_hidden()

        # GIVEN chat data only, WHEN DPO is picked, THEN no file is offered and the page says why
        page.locator("label[data-method=dpo]").click()
        expect(options).to_have_count(0)
        expect(page.get_by_test_id("no-matching-files")).to_contain_text("No validated preference files")
        shots.take(page, "dpo-no-files")

    preference_file = account.upload("pairs.jsonl", _preference_pairs(12))
    with new_page(browser) as (_, page):
        sign_in(page, held_cluster.base_url, account.email)
        _open(page, held_cluster.base_url, "/train")
        expect(page.locator("#training-file option")).to_have_count(1)  # supervised: the chat file still

        # WHEN DPO is picked with a preference file uploaded, THEN only that file is offered, with a beta field
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/estimates")
                                 and '"dpo"' in (r.post_data or "")) as estimate:
            page.locator("label[data-method=dpo]").click()
        options = page.locator("#training-file option")
        expect(options).to_have_count(1)
        expect(options.first).to_have_attribute("value", preference_file)
        expect(page.get_by_test_id("no-matching-files")).to_be_empty()
        beta = page.get_by_label("Beta")
        expect(beta).to_be_visible()
        expect(beta).to_have_attribute("placeholder", re.compile(r"^auto"))
        sent = json.loads(estimate.value.post_data or "{}")
        assert sent["training_file"] == preference_file and sent["method"]["type"] == "dpo", sent
        assert "hyperparameters" not in sent, sent

        # The validation file picker offers the same kind only; a beta out of bounds is refused on the page.
        page.locator("#validation-mode").select_option("file")
        expect(page.locator("#validation-file option")).to_have_count(1)
        expect(page.locator("#validation-file option").first).to_have_attribute("value", preference_file)
        beta.fill("3")
        expect(page.get_by_text("Beta must be above 0 and at most 2.")).to_be_visible()
        beta.fill("0.2")
        expect(page.get_by_text("Beta must be above 0 and at most 2.")).to_be_hidden()
        shots.take(page, "dpo-preference-file")

        # Back to supervised: the chat file again.
        page.locator("label[data-method=supervised]").click()
        expect(page.locator("#training-file option")).to_have_count(1)
        expect(page.locator("#training-file option").first).to_have_attribute("value", chat_file)

        # A page set to continue from a model says so, and starts afresh from a base model on request.
        _open(page, held_cluster.base_url, f"/train?model=ft:{DEMO_MODEL_ID}:someone::abcd1234&file={chat_file}")
        expect(page.get_by_test_id("continue-from")).to_be_visible()
        page.get_by_role("button", name="Start from a base model instead").click()
        expect(page.get_by_test_id("continue-from")).to_have_count(0)
        expect(page).not_to_have_url(re.compile("model="))
        expect(page.locator("#training-file")).to_have_value(chat_file)


def test_a_failed_job_is_retried_from_its_checkpoint_with_a_new_budget_cap(
        held_cluster: Any, account: Account, browser: Browser, shots: Screenshots) -> None:
    training_file = account.upload("train.jsonl", make_demo_dataset(20, seed=24))
    # GIVEN a job whose first part fails right after its first checkpoint
    job_id = account.create_job({"model": DEMO_MODEL_ID, "training_file": training_file})["id"]
    held_cluster.release(job_id, "fail")
    failed = account.wait_until_finished(job_id)
    assert failed["status"] == "failed", failed
    with new_page(browser) as (_, page):
        sign_in(page, held_cluster.base_url, account.email)
        _open(page, held_cluster.base_url, f"/jobs/{job_id}")
        expect(page.locator(".page-title [data-status=failed]")).to_be_visible()
        retry = page.get_by_role("form", name="Retry this job")
        expect(retry).to_be_visible()
        shots.take(page, "failed")

        # WHEN it is retried with a new budget cap, THEN the page says where it resumes from
        retry.get_by_label("New budget cap (USD, optional)").fill("5")
        retry.get_by_role("button", name="Retry job").click()
        expect(page.get_by_test_id("retry-message")).to_contain_text("Resuming from the checkpoint at step")
        parts = wait_for(lambda: account.job(job_id)["parts"], lambda p: len(p) == 2,
                         f"the retried part of {job_id}", 30)
        held_cluster.release(parts[-1]["sagemaker_job_name"])
        expect(retry).to_be_hidden()

        # THEN it succeeds under the same id, its failed start and its retry listed
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=JOB_DEADLINE_MS)
        rows = page.locator("tr[data-part]")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator("[data-status=failed]")).to_be_visible()
        expect(rows.nth(1)).to_have_attribute("data-kind", "retry")
        shots.take(page, "retried-succeeded")
    retried = account.job(job_id)
    assert retried["max_cost_usd"] == 5 and retried["parts"][-1]["from_step"] is not None, retried


def test_a_dpo_job_launched_from_the_train_page_shows_its_reward_accuracy(
        held_cluster: Any, account: Account, browser: Browser, shots: Screenshots) -> None:
    preference_file = account.upload("pairs.jsonl", _preference_pairs(16))
    with new_page(browser) as (_, page):
        sign_in(page, held_cluster.base_url, account.email)
        _open(page, held_cluster.base_url, f"/train?file={preference_file}")
        expect(page.locator("label[data-method=dpo] input")).to_be_checked()  # the file's kind picks the method
        page.locator(f"label[data-model='{DEMO_MODEL_ID}']").click()
        page.get_by_label("Beta").fill("0.2")
        expect(page.get_by_test_id("estimate-cost")).to_contain_text("$")
        job, sent = launch_from_train_page(page, held_cluster)
        assert sent["method"]["type"] == "dpo" and sent["method"]["dpo"]["hyperparameters"]["beta"] == 0.2, sent

        # THEN the job page charts its reward accuracy beside the loss
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=JOB_DEADLINE_MS)
        expect(page.locator(".page-title")).to_contain_text("DPO")
        reward = page.get_by_role("heading", name="Reward accuracy")
        expect(reward).to_be_visible()
        expect(page.locator(".chart-svg").nth(1)).not_to_have_attribute("data-points", "0", timeout=30_000)
        expect(page.get_by_test_id("reward-latest")).to_contain_text("Reward accuracy")
        shots.take(page, "dpo-succeeded")
    finished = account.job(job["id"])
    assert finished["method"]["type"] == "dpo" and finished["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
