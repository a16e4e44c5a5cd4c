"""Evaluations: a held-out chat file through each model, scored by exact match and, where the model exposes it,
the loss on the reference answers; results per example and per model.

Each example's prompt is its messages up to its last assistant message, which is the reference. Each model
answers greedily (temperature 0). Exact match compares the answer with the reference after trimming and
collapsing whitespace. The loss is the mean token negative log-likelihood of the reference given the prompt:
the local server answers it (its documented `llmt_score` extension); LMI does not, so on AWS it is null.

An evaluation deploys what it needs on demand (idle_minutes EVALUATION_IDLE_MINUTES: the deployment goes soon
after), since asking for one is asking for the models to run. A job that trained with a validation file gets one
automatically when it succeeds, its base model against its fine-tuned one (`eval-{job id}`: once per job).
The worker runs it (its queue's visibility is extended while it works); the per-example results are JSON in the
bucket (`evaluations/{user}/{id}.json`), the summary in the table.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from botocore.exceptions import ClientError

from services.inference import chat, deployments, lmi
from services.inference.deps import Deps
from services.inference.models import CreateDeployment, CreateEvaluation, Evaluation, FineTunedModel, ModelSummary
from services.inference.served_models import resolve_model
from shared.contracts.inference_events import EVALUATION_STATUS_EVENTS, EvaluationRequested
from shared.envelope import new_event
from shared.errors import APIError, InvalidRequest, NotFound

log = logging.getLogger(__name__)

AUTO_EXAMPLES = 50
EVALUATION_IDLE_MINUTES = 15
MAX_ANSWER_TOKENS = 256


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


async def _announce(deps: Deps, evaluation: Evaluation, status: str, error: str | None = None) -> None:
    event = EVALUATION_STATUS_EVENTS[status](evaluation_id=evaluation.evaluation_id, user_id=evaluation.user_id,
                                             models=evaluation.models, job_id=evaluation.job_id, status=status,
                                             error=error)
    await deps.events.publish(new_event(event, user_id=evaluation.user_id))


async def _checked_file(file_id: str, user_id: str, deps: Deps) -> None:
    view = await deps.files.get(file_id)
    if view is None or view.user_id != user_id or view.status == "deleted":
        raise NotFound(f"No file {file_id!r}.", param="file", code="file_not_found")
    if view.status == "uploaded":
        raise InvalidRequest(f"File {file_id} is still being validated; try again when it is processed.",
                             param="file", code="file_not_ready")
    if view.status == "error" or view.purpose != "fine-tune":
        raise InvalidRequest(f"File {file_id} is not a validated fine-tune file.", param="file",
                             code="invalid_file")
    if view.example_type != "chat":
        raise InvalidRequest(f"File {file_id} holds {view.example_type} examples; an evaluation needs chat "
                             "examples (messages ending with an assistant reply).", param="file",
                             code="invalid_file_format")


async def create_evaluation(body: CreateEvaluation, user_id: str, deps: Deps, job_id: str | None = None,
                            evaluation_id: str | None = None) -> Evaluation:
    for model in body.models:
        await resolve_model(model, user_id, deps)
    await _checked_file(body.file, user_id, deps)
    evaluation = Evaluation(evaluation_id=evaluation_id or f"eval-{secrets.token_hex(12)}", user_id=user_id,
                            models=body.models, file=body.file, max_examples=body.max_examples, status="queued",
                            created_at=int(time.time()), job_id=job_id)
    await deps.evaluations.create(evaluation)
    await _announce(deps, evaluation, "queued")
    await deps.commands.send(new_event(EvaluationRequested(evaluation_id=evaluation.evaluation_id), user_id=user_id))
    return evaluation


async def evaluate_new_model(model: FineTunedModel, deps: Deps) -> None:
    """A fine-tuned model whose job had a validation file: its base against it, once per job."""
    if not model.validation_file:
        return
    evaluation_id = f"eval-{model.job_id.removeprefix('ftjob-')}"
    if await deps.evaluations.get(evaluation_id) is not None:
        return
    try:
        await create_evaluation(CreateEvaluation(models=[model.base_model, model.model_id],
                                                 file=model.validation_file, max_examples=AUTO_EXAMPLES),
                                model.user_id, deps, job_id=model.job_id, evaluation_id=evaluation_id)
    except APIError as exc:  # the file went, or the base model is not servable: nothing to evaluate
        log.info("no automatic evaluation", extra={"job_id": model.job_id, "reason": exc.message})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise


async def get_evaluation(evaluation_id: str, user_id: str, deps: Deps) -> Evaluation:
    evaluation = await deps.evaluations.get(evaluation_id)
    if evaluation is None or evaluation.user_id != user_id:
        raise NotFound(f"No evaluation {evaluation_id!r}.", param="evaluation_id")
    return evaluation


async def results_of(evaluation: Evaluation, deps: Deps) -> list[dict[str, Any]]:
    if not evaluation.results_key:
        return []
    body = await (await deps.s3.get_object(Bucket=deps.config.bucket, Key=evaluation.results_key))["Body"].read()
    results: list[dict[str, Any]] = json.loads(body)
    return results


async def delete_evaluation(evaluation_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    evaluation = await get_evaluation(evaluation_id, user_id, deps)
    if evaluation.results_key:
        await deps.s3.delete_object(Bucket=deps.config.bucket, Key=evaluation.results_key)
    await deps.evaluations.delete(evaluation_id)
    return {"id": evaluation_id, "object": "evaluation", "deleted": True}


async def _examples(file_id: str, limit: int, deps: Deps) -> list[dict[str, Any]]:
    view = await deps.files.get(file_id)
    if view is None or not view.normalized_uri:
        raise LookupError(f"file {file_id} is gone")
    bucket, _, key = view.normalized_uri.removeprefix("s3://").partition("/")
    body = (await deps.s3.get_object(Bucket=bucket, Key=key))["Body"]
    examples: list[dict[str, Any]] = []
    try:
        await _take_examples(lmi.json_lines(body.iter_chunks(64 * 1024)), limit, examples)
    finally:
        body.close()  # read only as far as the examples taken: a file may hold millions
    return examples


async def _take_examples(objects: AsyncIterator[dict[str, Any]], limit: int, examples: list[dict[str, Any]]) -> None:
    async for example in objects:
        messages = example.get("messages") or []
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if example.get("type", "chat") != "chat" or last is None or not messages[last].get("content"):
            continue
        prompt = [{k: v for k, v in m.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}
                  for m in messages[:last]]
        examples.append({"prompt": prompt, "reference": str(messages[last]["content"])})
        if len(examples) == limit:
            return


async def _answer(target: chat.Target, prompt: list[dict[str, Any]], reference: str, deps: Deps,
                  invoker: chat.Invoker) -> dict[str, Any]:
    # The answer needs about as many tokens as the reference: bytes / 2 + a margin bounds most tokenizers.
    budget = min(MAX_ANSWER_TOKENS, len(reference.encode()) // 2 + 32)
    body = {"messages": prompt, "temperature": 0, "max_tokens": budget}
    try:
        raw = await invoker.complete(target, body, deps)
        text = str(((raw.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
        return {"text": text, "exact_match": normalise(text) == normalise(reference), "error": None}
    except APIError as exc:
        return {"text": None, "exact_match": False, "error": exc.message}


async def _loss(target: chat.Target, prompt: list[dict[str, Any]], reference: str, deps: Deps,
                invoker: chat.Invoker) -> float | None:
    body = {"messages": [*prompt, {"role": "assistant", "content": reference}], "llmt_score": True}
    try:
        raw = await invoker.complete(target, body, deps)
    except APIError:
        return None
    loss = raw.get("loss")
    return float(loss) if isinstance(loss, (int, float)) else None


async def _target(model: str, user_id: str, deps: Deps) -> chat.Target:
    current = await deployments.active_for_model(deps, user_id, model)
    if current is None:
        await deployments.create_deployment(CreateDeployment(model=model, idle_minutes=EVALUATION_IDLE_MINUTES),
                                            user_id, deps, on_demand=True)
    # An endpoint on AWS takes minutes to come up: wait as long as a deployment may take (the worker keeps the
    # message invisible meanwhile, and other messages are handled beside it).
    return await chat.serving_target(model, user_id, deps, on_demand=True, wait_s=deployments.CREATE_DEADLINE_S)


async def run_evaluation(event: EvaluationRequested, deps: Deps) -> None:
    evaluation = await deps.evaluations.get(event.evaluation_id)
    if evaluation is None or evaluation.status in ("succeeded", "failed"):
        return
    if not await deps.evaluations.update(evaluation.evaluation_id, ("queued", "running"), status="running",
                                         started_at=int(time.time())):
        return
    await _announce(deps, evaluation, "running")
    try:
        results, summary = await _run(evaluation, deps)
    except (APIError, LookupError) as exc:
        message = exc.message if isinstance(exc, APIError) else str(exc)
        if await deps.evaluations.update(evaluation.evaluation_id, ("running",), status="failed", error=message,
                                         finished_at=int(time.time())):
            await _announce(deps, evaluation, "failed", message)
        return
    key = f"evaluations/{evaluation.user_id}/{evaluation.evaluation_id}.json"
    await deps.s3.put_object(Bucket=deps.config.bucket, Key=key, Body=json.dumps(results).encode(),
                             ContentType="application/json")
    if await deps.evaluations.update(evaluation.evaluation_id, ("running",), status="succeeded",
                                     summary=[s.model_dump() for s in summary], results_key=key,
                                     finished_at=int(time.time())):
        await _announce(deps, evaluation, "succeeded")
        log.info("evaluation done", extra={"evaluation_id": evaluation.evaluation_id,
                                           "summary": [s.model_dump() for s in summary]})


async def _run(evaluation: Evaluation, deps: Deps) -> tuple[list[dict[str, Any]], list[ModelSummary]]:
    examples = await _examples(evaluation.file, evaluation.max_examples, deps)
    if not examples:
        raise LookupError("the file holds no chat example ending with an assistant reply")
    invoker = chat.Invoker(4)
    results: list[dict[str, Any]] = [{"index": i, "prompt": e["prompt"], "reference": e["reference"], "outputs": {}}
                                     for i, e in enumerate(examples)]
    summary = []
    for model in evaluation.models:
        target = await _target(model, evaluation.user_id, deps)
        scores_loss = True
        losses: list[float] = []
        for result in results:
            output = await _answer(target, result["prompt"], result["reference"], deps, invoker)
            output["loss"] = None
            if scores_loss:
                output["loss"] = await _loss(target, result["prompt"], result["reference"], deps, invoker)
                scores_loss = output["loss"] is not None  # not exposed: not asked again
                if output["loss"] is not None:
                    losses.append(output["loss"])
            result["outputs"][model] = output
        matched = sum(1 for r in results if r["outputs"][model]["exact_match"])
        summary.append(ModelSummary(model=model, exact_match=matched / len(results),
                                    loss=sum(losses) / len(losses) if losses and len(losses) == len(results)
                                    else None, examples=len(results)))
    return results, summary
