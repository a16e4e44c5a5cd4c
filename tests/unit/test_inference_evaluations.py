"""Evaluations (services/inference/evaluations.py) with fakes: which files and models are accepted, how
answers are scored, and that a server without the loss extension (LMI) gives a null loss, asked once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from services.inference import deployments, evaluations
from services.inference.deps import Deps
from services.inference.models import CreateDeployment, CreateEvaluation, FileView, FineTunedModel
from shared.contracts.inference_events import EvaluationRequested
from shared.errors import InvalidRequest, NotFound
from tests.support.inference import FakeRuntime, FakeS3, FakeSageMaker, client_error, inference_deps

DEMO = "llm-tuner/tiny-chat"
EXAMPLES = [{"type": "chat", "messages": [{"role": "user", "content": f"q{i}"},
                                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(3)]


async def with_file(deps: Deps, example_type: str = "chat", user: str = "u1") -> str:
    assert isinstance(deps.s3, FakeS3)
    deps.s3.objects[("bucket", "normalized/u1/f.jsonl")] = "".join(json.dumps(e) + "\n" for e in EXAMPLES).encode()
    await deps.files.put(FileView(file_id="file-1", user_id=user, status="processed", purpose="fine-tune",
                                  filename="f.jsonl", example_type=example_type,
                                  normalized_uri="s3://bucket/normalized/u1/f.jsonl", examples=3))
    return "file-1"


async def served(deps: Deps, model: str) -> None:
    deployment, _ = await deployments.create_deployment(CreateDeployment(model=model), "u1", deps)
    for _ in range(5):
        await deployments.advance(deployment.deployment_id, deps)
        assert isinstance(deps.sagemaker, FakeSageMaker)
        deps.sagemaker.settle()


def reply(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}, "finish_reason": "eos_token"}]}).encode()


async def test_files_that_cannot_be_evaluated_are_refused() -> None:
    deps = inference_deps()
    with pytest.raises(NotFound):
        await evaluations.create_evaluation(CreateEvaluation(models=[DEMO], file="file-1"), "u1", deps)
    await with_file(deps, example_type="preference")
    with pytest.raises(InvalidRequest) as preference:
        await evaluations.create_evaluation(CreateEvaluation(models=[DEMO], file="file-1"), "u1", deps)
    assert preference.value.code == "invalid_file_format"
    await with_file(deps, user="u2")
    with pytest.raises(NotFound):
        await evaluations.create_evaluation(CreateEvaluation(models=[DEMO], file="file-1"), "u1", deps)


async def test_exact_match_and_a_loss_the_server_does_not_expose() -> None:
    deps = inference_deps()
    file_id = await with_file(deps)
    await served(deps, DEMO)
    assert isinstance(deps.runtime, FakeRuntime)
    lmi_refuses = client_error("ModelError", "client error", status=424, OriginalStatusCode=400,
                               OriginalMessage='{"error": "unknown field llmt_score"}')
    # answer 0 (right, modulo spaces), loss (refused: not asked again), answer 1 (wrong), answer 2 (right)
    deps.runtime.answers = [reply("  answer  0 "), lmi_refuses, reply("answer 9"), reply("answer 2")]
    created = await evaluations.create_evaluation(CreateEvaluation(models=[DEMO], file=file_id), "u1", deps)
    await evaluations.run_evaluation(EvaluationRequested(evaluation_id=created.evaluation_id), deps)
    done = await evaluations.get_evaluation(created.evaluation_id, "u1", deps)
    assert done.status == "succeeded", done.error
    assert [(s.model, s.examples, s.loss) for s in done.summary] == [(DEMO, 3, None)]
    assert done.summary[0].exact_match == pytest.approx(2 / 3)
    results = await evaluations.results_of(done, deps)
    assert [r["outputs"][DEMO]["exact_match"] for r in results] == [True, False, True]
    assert results[0]["prompt"] == [{"role": "user", "content": "q0"}] and results[0]["reference"] == "answer 0"
    asked = [json.loads(r["Body"]) for r in deps.runtime.requests]
    assert [bool(a.get("llmt_score")) for a in asked] == [False, True, False, False]
    assert all(a.get("temperature") == 0 for a in asked if not a.get("llmt_score"))


async def test_a_succeeded_job_with_a_validation_file_gets_one_evaluation() -> None:
    deps = inference_deps()
    file_id = await with_file(deps)
    model = FineTunedModel(model_id=f"ft:{DEMO}:u1::abcd1234", user_id="u1", base_model=DEMO, job_id="ftjob-abcd",
                           artifact="s3://bucket/a/model.tar.gz", created_at=int(time.time()),
                           validation_file=file_id)
    await deps.models.put(model)
    await evaluations.evaluate_new_model(model, deps)
    await evaluations.evaluate_new_model(model, deps)  # a redelivered job.succeeded
    listed = await deps.evaluations.for_user("u1")
    assert [(e.evaluation_id, e.models, e.job_id) for e in listed] == [("eval-abcd", [DEMO, model.model_id],
                                                                        "ftjob-abcd")]
    sent: list[Any] = [c.type for c in deps.commands.sent]  # type: ignore[attr-defined]
    assert sent.count("inference.evaluation.requested") == 1
