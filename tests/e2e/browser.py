"""Playwright helpers for the dashboard's browser tests: Debian's chromium (no browser download), full-page
screenshots saved as test artifacts, and the few page steps several tests share."""

from __future__ import annotations

import base64
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, ViewportSize, expect

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")  # the Makefile installs Debian's package there
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PASSWORD = "a long e2e password"
PHONE: ViewportSize = {"width": 390, "height": 844}
LAPTOP: ViewportSize = {"width": 1280, "height": 900}


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class Screenshots:
    """Numbered full-page screenshots of one test: `test-artifacts/screenshots/<test>/<nn>-<name>.png`."""

    def __init__(self, test_name: str) -> None:
        self.folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]", "_", test_name)
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.count = 0

    def take(self, page: Page, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path


@contextmanager
def new_page(browser: Browser, viewport: ViewportSize = LAPTOP) -> Iterator[tuple[BrowserContext, Page]]:
    """A fresh browser context (its own cookies: another person) and a page that fails the test on a script error
    or a Content-Security-Policy violation."""
    context = browser.new_context(viewport=viewport, accept_downloads=True,
                                  reduced_motion="reduce")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The gateway's CSP allows no inline script or style: a violation is a bug in the page.
    page.on("console", lambda message: errors.append(message.text)
            if "Content Security Policy" in message.text else None)
    try:
        yield context, page
    finally:
        context.close()
    assert not errors, f"script errors or CSP violations in the page: {errors}"


def new_email() -> str:
    return f"ui-{uuid.uuid4().hex[:10]}@example.com"


def sign_up(page: Page, base_url: str, shots: Screenshots | None = None) -> str:
    """Open the dashboard, create an account through the form, land on the jobs page; returns the email."""
    email = new_email()
    page.goto(f"{base_url}/")
    expect(page).to_have_url(re.compile(r"#/signin"))
    page.get_by_role("link", name="Create an account").click()
    expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    if shots:
        shots.take(page, "sign-up")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"#/jobs$"))
    expect(page.get_by_role("heading", name="Fine-tuning jobs")).to_be_visible()
    return email


def sign_in(page: Page, base_url: str, email: str, password: str = PASSWORD) -> None:
    """Open the dashboard and sign in through the form as an existing account; lands on the jobs page."""
    page.goto(f"{base_url}/")
    expect(page).to_have_url(re.compile(r"#/signin"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/jobs$"))
    expect(page.get_by_role("heading", name="Fine-tuning jobs")).to_be_visible()


def open_nav(page: Page, name: str) -> None:
    """Follow a link of the main navigation (the sidebar; the top bar's menu on a phone)."""
    menu = page.get_by_role("button", name="Menu")
    if menu.is_visible():
        menu.click()
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def upload(page: Page, path: Path) -> None:
    """From the Data page: pick a file with the file chooser."""
    open_nav(page, "Data")
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    page.locator("#file-input").set_input_files(str(path))


def drop(page: Page, path: Path) -> None:
    """From the Data page: drag a file onto the drop zone (a DataTransfer built in the page, as a drag would carry)."""
    open_nav(page, "Data")
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "application/jsonl" }));
            return transfer;
        }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    page.dispatch_event(".dropzone", "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(".dropzone", "drop", {"dataTransfer": transfer})
