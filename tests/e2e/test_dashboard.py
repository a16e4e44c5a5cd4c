"""The web dashboard in a real headless Chromium against the whole cluster: sign up, upload, see the file
validated live, estimate and launch a job on the demo model, watch it succeed with loss on the chart, download
the adapter; a bad file's line-numbered errors (with the page polling, live events cut off); a big file sent
straight to S3 in parts; and one person, on a phone, never seeing another's data.

Each test saves a full-page screenshot of every page it visits under test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from deploy.local.cluster import Cluster
from deploy.local.demo_model import DEMO_MODEL_ID
from tests.e2e.browser import PASSWORD, PHONE, Screenshots, drop, new_email, new_page, open_nav, sign_up, upload
from trainer_image.demo_model import make_demo_dataset

pytestmark = pytest.mark.e2e

JOB_DEADLINE_MS = 300_000
VALIDATION_DEADLINE_MS = 60_000
BIG_FILE_LINES = 44_000



def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_sign_up_upload_train_and_download_the_adapter(cluster: Cluster, browser: Browser, shots: Screenshots,
                                                       tmp_path: Path) -> None:
    data = _write_jsonl(tmp_path / "train.jsonl", [json.dumps(e) for e in make_demo_dataset(20, seed=11)])
    with new_page(browser) as (_, page):
        sign_up(page, cluster.gateway_url, shots)
        expect(page.get_by_text("No jobs yet")).to_be_visible()
        expect(page.locator(".live-text")).to_have_text("Live")  # the page holds the live event stream
        shots.take(page, "jobs-empty")

        # GIVEN a good file, WHEN it is uploaded, THEN its status turns to ready without a reload.
        upload(page, data)
        row = page.locator("tr[data-file-id]").filter(has_text="train.jsonl")
        expect(row).to_be_visible()
        expect(row.locator("[data-status=processed]")).to_be_visible(timeout=VALIDATION_DEADLINE_MS)
        shots.take(page, "files")

        row.get_by_role("link", name="train.jsonl").click()
        expect(page.get_by_text("Valid: ready for training.")).to_be_visible()
        expect(page.locator(".bubble-assistant").first).to_be_visible()
        shots.take(page, "file-report")

        # The train page: the demo model, an estimate, launch.
        page.get_by_role("link", name="Train on this file").click()
        expect(page.get_by_role("heading", name="Train a model")).to_be_visible()
        page.locator(f"label[data-model='{DEMO_MODEL_ID}']").click()
        expect(page.get_by_test_id("estimate-cost")).to_contain_text("$")
        expect(page.get_by_test_id("estimate-duration")).not_to_be_empty()
        expect(page.locator("input[name=instance_type]:checked")).to_have_value("ml.m5.large")
        # Two instances: the estimate names both and the processes they run; back to one for this job.
        page.get_by_label("Instances").fill("2")
        expect(page.locator(".estimate-rows")).to_contain_text("ml.m5.large \N{MULTIPLICATION SIGN} 2")
        expect(page.locator(".estimate-rows")).to_contain_text("2 · DDP")
        page.get_by_label("Instances").fill("1")
        expect(page.locator(".estimate-rows")).not_to_contain_text("\N{MULTIPLICATION SIGN} 2")
        shots.take(page, "train")
        page.get_by_role("button", name="Launch fine-tuning job").click()

        # The job page: the status reaches succeeded, the chart has points, the adapter downloads.
        expect(page).to_have_url(re.compile(r"#/jobs/ftjob-"))
        job_id = page.url.rsplit("/", 1)[-1]
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=JOB_DEADLINE_MS)
        points = page.locator(".chart-svg circle.chart-point")
        expect(points.first).to_be_attached(timeout=30_000)
        assert points.count() > 0
        download_link = page.locator("a[data-kind=adapter]")
        expect(download_link).to_be_visible(timeout=30_000)
        shots.take(page, "job-succeeded")

        with page.expect_download() as info:
            download_link.click()
        archive = tmp_path / "adapter.tar.gz"
        info.value.save_as(archive)
        with tarfile.open(archive, "r:gz") as tar:
            names = [Path(n).name for n in tar.getnames()]
        assert "adapter_config.json" in names, names

        # Kept on refresh: the chart's history comes back from the API.
        page.reload()
        expect(page.locator(".chart-svg circle.chart-point").first).to_be_attached()
        open_nav(page, "Jobs")
        expect(page.locator(f"tr[data-job-id='{job_id}'] [data-status=succeeded]")).to_be_visible()
        shots.take(page, "jobs")


def test_a_bad_file_shows_its_line_numbered_errors_without_live_events(
        cluster: Cluster, browser: Browser, shots: Screenshots, tmp_path: Path) -> None:
    good = [json.dumps(e) for e in make_demo_dataset(12, seed=3)]
    broken = '{"messages": [{"role": "user", "content": "cut'
    data = _write_jsonl(tmp_path / "broken.jsonl", [*good[:4], broken, *good[4:]])  # line 5
    with new_page(browser) as (_, page):
        # Without live events (a proxy that drops the stream, say), the page polls instead.
        page.route("**/api/events", lambda route: route.fulfill(status=404))
        sign_up(page, cluster.gateway_url, shots)
        expect(page.locator(".live-text")).to_have_text("Auto-refresh")
        drop(page, data)
        row = page.locator("tr[data-file-id]").filter(has_text="broken.jsonl")
        expect(row.locator("[data-status=error]")).to_be_visible(timeout=VALIDATION_DEADLINE_MS)
        shots.take(page, "files")

        row.get_by_role("link", name="broken.jsonl").click()
        expect(page.get_by_text("Rejected: fix these errors and upload again.")).to_be_visible()
        error = page.locator("tr.report-error").first
        expect(error.locator("td").nth(0)).to_have_text("5")
        expect(error).to_contain_text("invalid_json")
        shots.take(page, "file-report")


def test_a_big_file_goes_straight_to_storage_in_parts(cluster: Cluster, browser: Browser, shots: Screenshots,
                                                      tmp_path: Path) -> None:
    # GIVEN a file over the 8 MiB direct-upload threshold (two 8 MiB parts)
    examples = [json.dumps(e) for e in make_demo_dataset(40, seed=9)]
    lines = [examples[i % len(examples)][:-4] + f' {i}"}}]}}' for i in range(BIG_FILE_LINES)]  # no duplicates
    data = _write_jsonl(tmp_path / "big.jsonl", lines)
    assert data.stat().st_size > 8 * 1024 * 1024
    with new_page(browser) as (_, page):
        sign_up(page, cluster.gateway_url, shots)
        puts: list[str] = []
        page.on("requestfinished", lambda r: puts.append(r.url) if r.method == "PUT" else None)
        upload(page, data)
        # THEN its parts go to S3 over presigned URLs, not through the gateway, and it is validated as usual.
        row = page.locator("tr[data-file-id]").filter(has_text="big.jsonl")
        expect(row.locator("[data-status=processed]")).to_be_visible(timeout=VALIDATION_DEADLINE_MS)
        shots.take(page, "files")
        assert len(puts) == 2 and all(url.startswith(cluster.aws_url) for url in puts), puts


def _someone_elses_job(base_url: str) -> tuple[str, str]:
    """Another person's file and job, made through the API."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        grant = http.post("/auth/register", json={"email": new_email(), "password": PASSWORD})
        assert grant.status_code == 201, grant.text
        auth = {"Authorization": f"Bearer {grant.json()['access_token']}"}
        data = "".join(json.dumps(e) + "\n" for e in make_demo_dataset(12, seed=5))
        uploaded = http.post("/v1/files", headers=auth, data={"purpose": "fine-tune"},
                             files={"file": ("private.jsonl", data.encode(), "application/jsonl")})
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        job = http.post("/v1/fine_tuning/jobs", headers=auth, json={"model": DEMO_MODEL_ID, "training_file": file_id})
        assert job.status_code == 200, job.text
        return file_id, job.json()["id"]


def test_a_second_person_sees_none_of_the_first_persons_data(cluster: Cluster, browser: Browser,
                                                             shots: Screenshots) -> None:
    file_id, job_id = _someone_elses_job(cluster.gateway_url)
    with new_page(browser, PHONE) as (_, page):  # on a phone: the navigation is the top bar's menu
        sign_up(page, cluster.gateway_url, shots)
        expect(page.get_by_text("No jobs yet")).to_be_visible()
        shots.take(page, "jobs")
        open_nav(page, "Data")
        expect(page.get_by_text("No files yet")).to_be_visible()
        expect(page.get_by_text("private.jsonl")).to_have_count(0)
        shots.take(page, "files")

        page.goto(f"{cluster.gateway_url}/#/jobs/{job_id}")
        expect(page.get_by_role("heading", name="Job not found")).to_be_visible()
        shots.take(page, "job-not-found")
        page.goto(f"{cluster.gateway_url}/#/files/{file_id}")
        expect(page.get_by_role("heading", name="File not found")).to_be_visible()
        shots.take(page, "file-not-found")
