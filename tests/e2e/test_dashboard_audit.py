"""The Account page's security activity in a real headless Chromium against the whole cluster: a person sees
their sign-up, a failed sign-in made elsewhere, a key they create and a password change, newest first."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser, expect

from deploy.local.cluster import Cluster
from tests.e2e.browser import PASSWORD, Screenshots, new_page, open_nav, sign_up

pytestmark = pytest.mark.e2e


def test_the_account_page_lists_security_activity_newest_first(cluster: Cluster, browser: Browser,
                                                              shots: Screenshots) -> None:
    with new_page(browser) as (_, page):
        email = sign_up(page, cluster.gateway_url)
        wrong = httpx.post(f"{cluster.gateway_url}/auth/login", json={"email": email, "password": "not the password"},
                           headers={"user-agent": "a guesser"})
        assert wrong.status_code == 401
        open_nav(page, "Account")
        expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
        activity = page.locator("tr[data-audit-type]")
        expect(activity.first).to_have_attribute("data-audit-type", "sign_in.failed")
        expect(activity.first).to_contain_text("a guesser")
        expect(activity.last).to_have_attribute("data-audit-type", "account.created")

        page.get_by_label("Key name").fill("e2e laptop")
        page.get_by_role("button", name="Create key").click()
        expect(activity.first).to_have_attribute("data-audit-type", "api_key.created")
        expect(activity.first).to_contain_text("e2e laptop")

        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password").fill("another long e2e password")
        page.get_by_role("button", name="Change password").click()
        # Three bcrypt hashes at the cluster's cost of 12: seconds on a busy machine.
        expect(page.get_by_text("Password changed. Other sessions were signed out.")).to_be_visible(timeout=60_000)
        expect(activity.first).to_have_attribute("data-audit-type", "password.changed")
        expect(activity).to_have_count(4)
        shots.take(page, "account-security-activity")

        # A reload renews the session from the refresh cookie: the page's origin is BASE_URL's.
        page.reload()
        expect(page.get_by_role("heading", name="Account", exact=True)).to_be_visible()
        expect(activity.first).to_have_attribute("data-audit-type", "password.changed")
