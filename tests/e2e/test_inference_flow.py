"""Train, then talk to the model, then measure it against its base, through the official openai SDK and the
gateway, with real parts only: the demo model trained in the SageMaker emulator, deployed on demand into the
emulator's endpoints (a real CPU generation server, the adapter read from the job's artifact in S3), chats in
LMI's schema through SageMaker's runtime API, the job's automatic base-vs-tuned evaluation."""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import pytest

from deploy.local.cluster import Cluster
from deploy.local.demo_model import DEMO_MODEL_ID
from shared.contracts import resources
from tests.support.accounts import register
from tests.support.polling import wait_for
from trainer_image.demo_model import SYSTEM_PROMPT, demo_facts

pytestmark = pytest.mark.e2e
# Five facts, each twice: OpenAI's minimum of 10 examples, for which the default hyperparameters run 10 epochs.
FACTS = demo_facts()[:5]


def sign_up(gateway: str) -> str:
    return str(register(gateway)["access_token"])


def question(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q}]


def answer(client: openai.OpenAI, model: str, q: str, **options: Any) -> str:
    completion = client.chat.completions.create(model=model, messages=question(q), temperature=0,  # type: ignore[arg-type]
                                                max_tokens=24, **options)
    return completion.choices[0].message.content or ""


def exact_match(client: openai.OpenAI, model: str) -> float:
    return sum(answer(client, model, q).strip() == a for q, a in FACTS) / len(FACTS)


@pytest.fixture(scope="module")
def trained(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One user's demo job, trained with the default hyperparameters on FACTS (validated on them too)."""
    token = sign_up(cluster.gateway_url)
    client = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=token, max_retries=0, timeout=600)
    data: Path = tmp_path_factory.mktemp("inference") / "facts.jsonl"
    data.write_text("".join(json.dumps({"messages": [*question(q), {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in FACTS * 2))
    files = []
    for _ in range(2):  # training and validation
        uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
        assert client.files.wait_for_processing(uploaded.id, poll_interval=0.5, max_wait_seconds=60).status == \
            "processed"
        files.append(uploaded.id)
    job = client.fine_tuning.jobs.create(model=DEMO_MODEL_ID, training_file=files[0], validation_file=files[1],
                                         suffix="chat")
    done = wait_for(lambda: client.fine_tuning.jobs.retrieve(job.id),
                    lambda j: j.status in ("succeeded", "failed", "cancelled"), "the job", 600)
    assert done.status == "succeeded", done.error
    return {"token": token, "client": client, "job": done, "model": done.fine_tuned_model, "files": files}


def test_the_tuned_model_answers_its_training_questions_and_the_base_does_not(cluster: Cluster,
                                                                            trained: dict[str, Any]) -> None:
    client: openai.OpenAI = trained["client"]
    model = trained["model"]
    # inference learns of the model from training.job.succeeded, a moment after the job says succeeded.
    listed = wait_for(lambda: {m.id: m for m in client.models.list().data}, lambda found: model in found,
                      "the fine-tuned model in /v1/models", 30)
    assert DEMO_MODEL_ID in listed
    assert listed[model].owned_by.startswith("user-") and listed[DEMO_MODEL_ID].owned_by == "llm-tuner"
    assert client.models.retrieve(model).id == model
    # The first chat deploys the model on demand (the local cluster's DEPLOY_ON_DEMAND): no extra step.
    tuned = exact_match(client, model)
    base = exact_match(client, DEMO_MODEL_ID)
    assert tuned >= 0.8, tuned
    assert base <= 0.2, base
    deployments = httpx.get(f"{cluster.gateway_url}/api/deployments",
                            headers={"Authorization": f"Bearer {trained['token']}"}).json()["data"]
    served = {d["model"]: d for d in deployments}
    assert served[model]["status"] == "in_service" and served[model]["on_demand"] is True
    assert served[model]["price_per_hour"] > 0 and served[model]["idle_minutes"] == 60
    # One endpoint for the user's base model and its fine-tune: the adapter rides on the base's.
    assert served[model]["endpoint_name"] == served[DEMO_MODEL_ID]["endpoint_name"]


def test_streaming_equals_the_plain_answer_at_temperature_0(trained: dict[str, Any]) -> None:
    client: openai.OpenAI = trained["client"]
    q, _ = FACTS[0]
    plain = client.chat.completions.create(model=trained["model"], messages=question(q),  # type: ignore[arg-type]
                                           temperature=0, max_tokens=24)
    stream = client.chat.completions.create(model=trained["model"], messages=question(q),  # type: ignore[arg-type,call-overload]
                                            temperature=0, max_tokens=24, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content and streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [plain.choices[0].finish_reason]
    usage = plain.usage
    assert usage is not None and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == usage.completion_tokens


def test_bad_requests_are_400s_naming_the_field(trained: dict[str, Any]) -> None:
    client: openai.OpenAI = trained["client"]
    model = trained["model"]
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"messages": question("hi"), "n": 2}, "n"),
        ({"messages": question("hi"), "temperature": 5}, "temperature"),
        ({"messages": question("hi"), "extra_body": {"best_of": 3}}, "best_of"),
        ({"messages": question("word " * 400)}, "messages"),  # beyond the demo model's 256-token context
    ]
    for options, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=model, **options)
        assert refused.value.status_code == 400
        body: Any = refused.value.body
        assert body["param"] == param, body
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="ft:nobody:nothing", messages=question("hi"))  # type: ignore[arg-type]


def test_many_concurrent_chats_queue_and_are_served(trained: dict[str, Any]) -> None:
    client: openai.OpenAI = trained["client"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: answer(client, trained["model"], FACTS[i % len(FACTS)][0]), range(32)))
    # Every request served (none refused or failed), and at temperature 0 the same question gets the same answer.
    assert all(answers[i] == answers[i % len(FACTS)] for i in range(len(answers)))
    assert sum(answers[i].strip() == a for i, (_, a) in enumerate(FACTS)) >= 4


def test_the_job_gets_a_base_versus_tuned_evaluation(cluster: Cluster, trained: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {trained['token']}"}
    url = f"{cluster.gateway_url}/api/evaluations"

    listed = wait_for(lambda: httpx.get(url, params={"job_id": trained["job"].id}, headers=headers).json()["data"],
                      lambda found: bool(found) and found[0]["status"] in ("succeeded", "failed"),
                      "the automatic evaluation", 300)
    evaluation = listed[0]
    assert evaluation["status"] == "succeeded", evaluation["error"]
    summary = {s["model"]: s for s in evaluation["summary"]}
    assert summary[trained["model"]]["exact_match"] >= 0.8 and summary[DEMO_MODEL_ID]["exact_match"] <= 0.2
    assert summary[trained["model"]]["loss"] < summary[DEMO_MODEL_ID]["loss"]  # the local server exposes it
    detail = httpx.get(f"{url}/{evaluation['id']}", headers=headers).json()
    assert len(detail["results"]) == 2 * len(FACTS)
    assert {r["reference"] for r in detail["results"]} == {a for _, a in FACTS}


def test_another_user_gets_404_and_a_deleted_model_is_gone(cluster: Cluster, trained: dict[str, Any]) -> None:
    model = trained["model"]
    other = openai.OpenAI(base_url=f"{cluster.gateway_url}/v1", api_key=sign_up(cluster.gateway_url),
                          max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(model)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=model, messages=question("hi"))  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        other.models.delete(model)
    assert model not in {m.id for m in other.models.list().data}
    mine = httpx.get(f"{cluster.gateway_url}/api/deployments",
                     headers={"Authorization": f"Bearer {trained['token']}"}).json()["data"]
    theirs = httpx.get(f"{cluster.gateway_url}/api/deployments/{mine[0]['id']}",
                       headers={"Authorization": f"Bearer {other.api_key}"})
    assert theirs.status_code == 404

    client: openai.OpenAI = trained["client"]
    deleted = client.models.delete(model)
    assert deleted.id == model and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(model)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model, messages=question("hi"))  # type: ignore[arg-type]
    # Its artifacts go (training hears inference.model.deleted), and so does its deployment.
    artifact: str = trained["job"].model_extra["model_artifact"]
    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    assert bucket == resources.BUCKET
    s3 = boto3.client("s3")
    wait_for(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=key), lambda listing: "Contents" not in listing,
             "the artifact's removal", 60)
    headers = {"Authorization": f"Bearer {trained['token']}"}

    def gone() -> bool:
        listed = httpx.get(f"{cluster.gateway_url}/api/deployments", params={"include_deleted": "true"},
                           headers=headers).json()["data"]
        return any(d["model"] == model and d["status"] == "deleted" for d in listed)
    wait_for(gone, bool, "the model's deployment taken down", 60)
