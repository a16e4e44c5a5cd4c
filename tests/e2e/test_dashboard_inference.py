"""The dashboard's serving pages in a real headless Chromium against the whole cluster: the playground streams a
fine-tuned model and its base side by side (what it shows equals the plain answer at temperature 0, and its
copied SDK snippet runs), stops a stream, offers to deploy a model that is not served; a job's automatic
evaluation and a new evaluation's side-by-side table; the deployments page prices a deployment before it starts
and stops it; and the files table fits a 1280-pixel window.

One account with one trained demo job is shared by the serving tests (a module fixture), so the demo trains once.
The local cluster deploys a model on its first message (DEPLOY_ON_DEMAND), so the first answer waits for it.
Each test saves full-page screenshots under test-artifacts/screenshots/<test>/."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, Response, Route, ViewportSize, expect

from deploy.local.cluster import Cluster
from deploy.local.demo_model import DEMO_MODEL_ID
from tests.e2e.browser import PASSWORD, Screenshots, new_email, new_page, open_nav, sign_in
from tests.support.polling import wait_for
from trainer_image.demo_model import SYSTEM_PROMPT, demo_facts, make_demo_dataset

pytestmark = pytest.mark.e2e

JOB_DEADLINE_S = 420
# The first answer of a model waits for its deployment (on demand): the emulator starts a generation server.
ANSWER_DEADLINE_MS = 360_000
EVALUATION_DEADLINE_MS = 360_000
DEPLOYMENT_DEADLINE_MS = 360_000
LAPTOP_800: ViewportSize = {"width": 1280, "height": 800}
MAX_TOKENS = 48


@dataclass(frozen=True)
class Trained:
    """An account (email, password, API key) whose demo job has succeeded with a validation file."""

    email: str
    api_key: str
    job_id: str
    model: str
    validation_file: str
    examples: list[dict[str, Any]]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


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
def trained(cluster: Cluster) -> Trained:
    # Few enough facts that the default hyperparameters learn them; validated on the same ones.
    examples = [{"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q},
                              {"role": "assistant", "content": a}]} for q, a in demo_facts()[:10]]
    with httpx.Client(base_url=cluster.gateway_url, timeout=60) as http:
        email, api_key = _register(http)
        headers = {"Authorization": f"Bearer {api_key}"}
        train = _upload(http, headers, "train.jsonl", [json.dumps(e) for e in examples])
        valid = _upload(http, headers, "valid.jsonl", [json.dumps(e) for e in examples])
        assert train["status"] == valid["status"] == "processed", (train, valid)
        created = http.post("/v1/fine_tuning/jobs", headers=headers, json={
            "model": DEMO_MODEL_ID, "training_file": train["id"], "validation_file": valid["id"]})
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        job = wait_for(lambda: http.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers).json(),
                       lambda j: j["status"] in {"succeeded", "failed", "cancelled"}, f"job {job_id}", JOB_DEADLINE_S)
    assert job["status"] == "succeeded", job["error"]
    return Trained(email=email, api_key=api_key, job_id=job_id, model=job["fine_tuned_model"],
                   validation_file=valid["id"], examples=examples)


def _plain_answer(cluster: Cluster, trained: Trained, model: str, messages: list[dict[str, str]]) -> str:
    response = httpx.post(f"{cluster.gateway_url}/v1/chat/completions", headers=trained.headers, timeout=120, json={
        "model": model, "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS})
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def _shoot(shots: Screenshots, page: Page, name: str) -> None:
    """A full-page screenshot from the top (scrolled, the fixed skip link and sticky sidebar land mid-page), the
    toasts dismissed."""
    page.locator(".toast-close").evaluate_all("buttons => buttons.forEach((b) => b.click())")
    page.evaluate("window.scrollTo(0, 0)")
    shots.take(page, name)


def _usd(value: float) -> str:
    """As the dashboard's formatUsd shows a price under $10 in en-US: 2 to 3 decimals."""
    text = f"{value:.3f}"
    return "$" + (text[:-1] if text.endswith("0") else text)


def _percent(fraction: float) -> str:
    """As the dashboard shows an exact-match rate: one decimal, halves rounded up (JavaScript's Math.round)."""
    return f"{math.floor(fraction * 1000 + 0.5) / 10:.1f}%"


def _chat_requests(page: Page) -> list[dict[str, Any]]:
    """The JSON bodies of the chat completions the page sends, as it sends them."""
    bodies: list[dict[str, Any]] = []

    def keep(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            bodies.append(json.loads(request.post_data or "{}"))
    page.on("request", keep)
    return bodies


def _deployment_posted(response: Response) -> bool:
    return response.url.endswith("/api/deployments") and response.request.method == "POST"


COUNT_PIECES = """() => {
  window.__pieces = { a: 0, b: 0 };
  for (const side of ["a", "b"]) {
    new MutationObserver((records) => {
      for (const r of records) for (const n of r.addedNodes) {
        if (n.nodeType === Node.TEXT_NODE && r.target.closest(".bubble-assistant")) window.__pieces[side] += 1;
      }
    }).observe(document.querySelector(`.chat-log[data-side=${side}]`), { childList: true, subtree: true });
  }
}"""


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
        _shoot(shots, page, "files")
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


def test_the_playground_streams_a_fine_tuned_model_beside_its_base(
        cluster: Cluster, browser: Browser, shots: Screenshots, trained: Trained, tmp_path: Path) -> None:
    question = trained.examples[0]["messages"][1]["content"]
    with new_page(browser) as (context, page):
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=cluster.gateway_url)
        sign_in(page, cluster.gateway_url, trained.email)
        open_nav(page, "Playground")
        # GIVEN the fine-tuned model, with its base beside it
        expect(page.locator("#pg-model-a")).to_have_value(trained.model)
        expect(page.locator("#pg-model-b")).to_have_value(DEMO_MODEL_ID)
        page.get_by_label("System prompt").fill(SYSTEM_PROMPT)
        page.get_by_label("Temperature").fill("0")
        page.get_by_label("Max tokens").fill(str(MAX_TOKENS))
        requests = _chat_requests(page)
        page.evaluate(COUNT_PIECES)

        # WHEN a message is sent
        page.get_by_label("Message", exact=True).fill(question)
        page.get_by_role("button", name="Send").click()
        send = page.get_by_role("button", name="Send")
        expect(send).to_be_disabled()
        expect(page.get_by_role("button", name="Stop")).to_be_enabled()
        for side in ("a", "b"):
            expect(page.locator(f".chat-log[data-side={side}] .bubble-assistant .bubble-meta")).to_contain_text(
                "finish:", timeout=ANSWER_DEADLINE_MS)
        expect(send).to_be_enabled()
        _shoot(shots, page, "playground")

        # THEN the same message went to both, streamed, and each answer equals the plain one at temperature 0
        assert sorted(r["model"] for r in requests) == sorted([trained.model, DEMO_MODEL_ID])
        assert all(r["stream"] is True and r["temperature"] == 0 and r["max_tokens"] == MAX_TOKENS for r in requests)
        first = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
        assert all(r["messages"] == first for r in requests), requests
        answers = {}
        for side, model in (("a", trained.model), ("b", DEMO_MODEL_ID)):
            shown = page.locator(f".chat-log[data-side={side}] .bubble-assistant .bubble-text").text_content()
            assert shown == _plain_answer(cluster, trained, model, first), side
            answers[side] = shown
        assert page.evaluate("window.__pieces.a") >= 2, "the tuned model's answer came in one piece, not streamed"

        # Multi-turn: each side sends its own history.
        requests.clear()
        page.get_by_label("Message", exact=True).fill("Say it again.")
        page.keyboard.press("Enter")
        expect(page.locator(".chat-log[data-side=a] .bubble-assistant .bubble-meta").nth(1)).to_contain_text(
            "finish:", timeout=ANSWER_DEADLINE_MS)
        expect(page.locator(".chat-log[data-side=b] .bubble-assistant .bubble-meta").nth(1)).to_contain_text("finish:")
        by_model = {r["model"]: r["messages"] for r in requests}
        assert by_model[trained.model] == [*first, {"role": "assistant", "content": answers["a"]},
                                           {"role": "user", "content": "Say it again."}]
        assert by_model[DEMO_MODEL_ID][2] == {"role": "assistant", "content": answers["b"]}

        # The conversation as code for the openai SDK: copied, it runs as it is and answers as the API does.
        page.get_by_label("Message", exact=True).fill(question)
        code = page.locator(".code-block code")
        expect(code).to_contain_text(f'base_url="{cluster.gateway_url}/v1"')
        expect(code).to_contain_text(f'model="{trained.model}"')
        expect(code).to_contain_text("temperature=0,")
        page.locator(".code-block").get_by_role("button", name="Copy").click()
        expect(page.locator(".code-block").get_by_role("button", name="Copied")).to_be_visible()
        snippet = page.evaluate("navigator.clipboard.readText()")
        assert snippet == code.text_content()
        second = page.locator(".chat-log[data-side=a] .bubble-assistant .bubble-text").nth(1).text_content()
        _shoot(shots, page, "playground-multi-turn")
    conversation = [*first, {"role": "assistant", "content": answers["a"]},
                    {"role": "user", "content": "Say it again."}, {"role": "assistant", "content": second or ""},
                    {"role": "user", "content": question}]
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace('api_key="sk-..."', f'api_key="{trained.api_key}"'))
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == _plain_answer(cluster, trained, trained.model, conversation) + "\n"


def test_the_playground_stops_a_stream_and_deploys_a_model_that_is_not_served(
        cluster: Cluster, browser: Browser, shots: Screenshots, trained: Trained) -> None:
    with new_page(browser) as (_, page):
        sign_in(page, cluster.gateway_url, trained.email)
        page.goto(f"{cluster.gateway_url}/#/playground?model={quote(trained.model, safe='')}&compare=")
        expect(page.locator("#pg-model-a")).to_have_value(trained.model)
        expect(page.locator(".chat-panel[data-side=b]")).to_be_hidden()
        message = page.get_by_label("Message", exact=True)
        log = page.locator(".chat-log[data-side=a]")

        # GIVEN an answer that does not come (the browser holds the request), WHEN Stop is pressed, THEN it ends
        held: list[Route] = []

        def hold(route: Route) -> None:  # never answered: the page waits until it aborts the request
            held.append(route)
        page.route("**/v1/chat/completions", hold)
        message.fill("Hello?")
        page.get_by_role("button", name="Send").click()
        expect(log.get_by_text("Waiting for the model…")).to_be_visible()
        page.get_by_role("button", name="Stop").click()
        expect(log.locator(".bubble-meta").last).to_have_text("Stopped.")
        expect(page.get_by_role("button", name="Send")).to_be_enabled()
        page.unroute("**/v1/chat/completions")

        # GIVEN a model that is not served (the server's 409), THEN the error shows with a Deploy button
        page.route("**/v1/chat/completions", lambda route: route.fulfill(status=409, json={"error": {
            "message": f"The model '{trained.model}' is not deployed. Deploy it: POST /api/deployments.",
            "type": "invalid_request_error", "param": "model", "code": "model_not_deployed"}}), times=1)
        question = trained.examples[1]["messages"][1]["content"]
        message.fill(question)
        page.get_by_role("button", name="Send").click()
        error = log.locator(".chat-error[data-code=model_not_deployed]")
        expect(error).to_contain_text("is not deployed")
        _shoot(shots, page, "model-not-deployed")
        # WHEN Deploy is pressed, THEN a deployment starts, and once in service the message is sent again
        with page.expect_response(_deployment_posted) as posted:
            error.get_by_role("button", name="Deploy").click()
        assert posted.value.status in (200, 201), posted.value.text()
        expect(log.locator(".chat-error")).to_contain_text("is in service", timeout=DEPLOYMENT_DEADLINE_MS)
        expect(log.locator(".bubble-assistant .bubble-meta").last).to_contain_text(
            "finish:", timeout=ANSWER_DEADLINE_MS)
        expect(page.locator(".chat-panel[data-side=a] [data-status=in_service]")).to_be_visible()
        _shoot(shots, page, "deployed-and-answered")


def test_a_job_shows_its_evaluation_and_a_new_evaluation_compares_models_side_by_side(
        cluster: Cluster, browser: Browser, shots: Screenshots, trained: Trained) -> None:
    with new_page(browser) as (_, page):
        sign_in(page, cluster.gateway_url, trained.email)
        # GIVEN the succeeded job with a validation file: its page shows the automatic evaluation, base against tuned
        page.goto(f"{cluster.gateway_url}/#/jobs/{trained.job_id}")
        heading = page.get_by_role("heading", name="Evaluation: base against tuned")
        evaluation = page.locator("section.card").filter(has=heading)
        expect(evaluation.locator("[data-status=succeeded]")).to_be_visible(timeout=EVALUATION_DEADLINE_MS)
        for model in (trained.model, DEMO_MODEL_ID):
            score = evaluation.locator(f".eval-summary tr[data-model='{model}'] [data-metric=exact_match]")
            expect(score).to_have_text(re.compile(r"^\d+\.\d%$"))
        expect(evaluation.locator(".eval-examples .verdict").first).to_be_visible()
        _shoot(shots, page, "job-evaluation")
        page.get_by_role("link", name="Try in playground").click()
        expect(page).to_have_url(re.compile(r"#/playground\?model="))
        expect(page.locator("#pg-model-a")).to_have_value(trained.model)

        # WHEN a new evaluation of both models on the validation file is started from the form
        open_nav(page, "Evaluations")
        form = page.get_by_role("form", name="New evaluation")
        for model in (trained.model, DEMO_MODEL_ID):
            expect(form.locator(f"input[name=models][value='{model}']")).to_be_checked()
        form.get_by_label("Held-out chat file").select_option(trained.validation_file)
        form.get_by_label("Max examples").fill("4")
        form.get_by_role("button", name="Start evaluation").click()
        expect(page).to_have_url(re.compile(r"#/evaluations/eval-"))
        evaluation_id = page.url.rsplit("/", 1)[-1]
        # THEN its page fills in: per model exact match and loss, per example each model's answer with ✓ or ✗
        expect(page.locator(".page-title [data-status=succeeded]")).to_be_visible(timeout=EVALUATION_DEADLINE_MS)
        stored = httpx.get(f"{cluster.gateway_url}/api/evaluations/{evaluation_id}", headers=trained.headers,
                           timeout=30).json()
        for row in stored["summary"]:
            shown = page.locator(f".eval-summary tr[data-model='{row['model']}']")
            expect(shown.locator("[data-metric=exact_match]")).to_have_text(_percent(row["exact_match"]))
            expect(shown.locator("[data-metric=loss]")).to_have_text(
                "—" if row["loss"] is None else f"{row['loss']:.3f}")
        examples = page.locator(".eval-examples tbody tr")
        expect(examples).to_have_count(4)
        expect(examples.locator(".verdict")).to_have_count(8)
        first = stored["results"][0]
        expect(examples.first).to_contain_text(first["reference"])
        expect(examples.first.locator(f"td[data-model='{trained.model}']")).to_contain_text(
            first["outputs"][trained.model]["text"])
        _shoot(shots, page, "evaluation")
        open_nav(page, "Evaluations")
        expect(page.locator(f"tr[data-evaluation-id='{evaluation_id}'] [data-status=succeeded]")).to_be_visible()
        _shoot(shots, page, "evaluations")


def test_the_deployments_page_prices_a_deployment_before_it_starts_and_stops_it(
        cluster: Cluster, browser: Browser, shots: Screenshots, trained: Trained) -> None:
    catalog = httpx.get(f"{cluster.gateway_url}/api/serving/catalog", headers=trained.headers, timeout=30).json()
    prices = {t["id"]: t["price_per_hour"] for t in catalog["instance_types"]}
    with new_page(browser) as (_, page):
        sign_in(page, cluster.gateway_url, trained.email)
        open_nav(page, "Deployments")
        # GIVEN the deploy form: the model's default instance type, with its price, before anything starts
        form = page.get_by_role("form", name="Deploy a model")
        form.get_by_label("Model").select_option(trained.model)
        instance = form.get_by_label("Instance type").input_value()
        assert instance in prices
        expect(page.get_by_test_id("deploy-price")).to_contain_text(f"{_usd(prices[instance])} per hour")
        expect(form.get_by_label("Stop after idle (minutes)")).to_have_value(str(catalog["default_idle_minutes"]))
        _shoot(shots, page, "deploy-form")

        # WHEN it is deployed, THEN its row comes in service with its price, live
        form.get_by_role("button", name="Deploy").click()
        row = page.locator("tr[data-deployment-id]").filter(has_text=trained.model).filter(
            has=page.locator("[data-status=creating], [data-status=in_service]"))
        expect(row.locator("[data-status=in_service]")).to_be_visible(timeout=DEPLOYMENT_DEADLINE_MS)
        expect(row).to_contain_text(f"{_usd(prices[instance])}/h")
        expect(row).to_contain_text(instance)
        _shoot(shots, page, "deployments")

        # WHEN it is stopped (after a confirmation), THEN it goes down
        deployment_id = row.get_attribute("data-deployment-id")
        row.get_by_role("button", name=f"Stop {trained.model}").click()
        page.get_by_role("dialog").get_by_role("button", name="Stop deployment").click()
        stopped = page.locator(f"tr[data-deployment-id='{deployment_id}']")
        expect(stopped.locator("[data-status=deleting], [data-status=deleted]")).to_be_visible()
        expect(stopped.locator("[data-status=deleted]")).to_be_visible(timeout=DEPLOYMENT_DEADLINE_MS)
        expect(stopped.get_by_role("button", name=re.compile("^Stop"))).to_have_count(0)
        _shoot(shots, page, "deployment-stopped")
