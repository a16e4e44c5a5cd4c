"""The dashboard in a real headless Chromium against the whole cluster, at a laptop's size: the files table fits a
1280-pixel window (long names wrap, a rejection's reason is cut short) with every row's Delete button in view.

Each test saves full-page screenshots under test-artifacts/screenshots/<test>/."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ViewportSize, expect, sync_playwright

from deploy.local.cluster import Cluster
from tests.e2e.browser import PASSWORD, Screenshots, launch, new_email, new_page, open_nav, sign_in
from tests.support.polling import wait_for
from trainer_image.demo_model import make_demo_dataset

pytestmark = pytest.mark.e2e

LAPTOP_800: ViewportSize = {"width": 1280, "height": 800}


def _register(http: httpx.Client) -> tuple[str, str]:
    email = new_email()
    grant = http.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert grant.status_code == 201, grant.text
    key = http.post("/auth/api-keys", json={"name": "e2e"},
                    headers={"Authorization": f"Bearer {grant.json()['access_token']}"})
    assert key.status_code == 201, key.text
    return email, str(key.json()["key"])


def _upload(http: httpx.Client, headers: dict[str, str], name: str, lines: list[str]) -> dict[str, Any]:
    """Upload a file and wait for its validation to end; returns the file object."""
    body = "".join(line + "\n" for line in lines).encode()
    created = http.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                        files={"file": (name, body, "application/jsonl")})
    assert created.status_code == 200, created.text
    file_id = created.json()["id"]
    found: dict[str, Any] = wait_for(lambda: http.get(f"/v1/files/{file_id}", headers=headers).json(),
                                     lambda f: f["status"] in {"processed", "error"}, f"validation of {name}", 60)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(request.node.name)


def test_the_files_table_fits_a_laptop_window(cluster: Cluster, browser: Browser, shots: Screenshots) -> None:
    # GIVEN files with long names, one of them rejected with a long reason
    long_name = "customer-support-conversations-exported-from-the-helpdesk-" + "2024-q3-" * 6 + "final.jsonl"
    good = [json.dumps(e) for e in make_demo_dataset(12, seed=4)]
    with httpx.Client(base_url=cluster.gateway_url, timeout=60) as http:
        email, api_key = _register(http)
        headers = {"Authorization": f"Bearer {api_key}"}
        assert _upload(http, headers, long_name, good)["status"] == "processed"
        broken = _upload(http, headers, "rejected-" + long_name, [*good[:3], '{"messages": "not a list"}'])
        assert broken["status"] == "error"
    # WHEN the Data page opens in a 1280x800 window
    with new_page(browser, LAPTOP_800) as (_, page):
        sign_in(page, cluster.gateway_url, email)
        open_nav(page, "Data")
        rows = page.locator("tr[data-file-id]")
        expect(rows).to_have_count(2)
        shots.take(page, "files")
        # THEN the page does not scroll sideways, and each row's Delete button is whole, inside the window
        assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP_800["width"]
        for i in range(2):
            delete = rows.nth(i).get_by_role("button", name=re.compile("^Delete "))
            top = delete.evaluate("b => b.getBoundingClientRect().top + window.scrollY")
            page.evaluate("(y) => window.scrollTo(0, y)", top - 200)  # vertically only: no container scrolls sideways
            box = delete.bounding_box()
            assert box is not None
            assert 0 <= box["x"] and box["x"] + box["width"] <= LAPTOP_800["width"], box
            assert 0 <= box["y"] and box["y"] + box["height"] <= LAPTOP_800["height"], box
            # nothing (an overflowing container's clip) covers it: the button is what a click there would hit
            assert delete.evaluate("b => { const r = b.getBoundingClientRect();"
                                   " return document.elementFromPoint(r.right - 3, r.top + r.height / 2) === b; }")
