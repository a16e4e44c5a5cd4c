"""`POST /v1/chat/completions`: check the request, find what serves the model, invoke it, answer as OpenAI does.

A model is served by the caller's deployment of it that is in service (deployments.py). None: 409
`model_not_deployed`, saying how to deploy it; where DEPLOY_ON_DEMAND is on (the local cluster) the chat starts
the deployment itself and waits for it. Invocations go through SageMaker's runtime (InvokeEndpoint, or
InvokeEndpointWithResponseStream) to the model's inference component, in LMI's schema (lmi.py). The container's
own refusals (a prompt beyond the model's context, say) come back as ModelError with the original status: a
400 to the caller, with the server's message. At most `max_concurrent_invocations` run per replica; more wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from services.inference import deployments, lmi
from services.inference.deps import Deps
from services.inference.models import ChatRequest, CreateDeployment, Deployment
from services.inference.served_models import resolve_model
from shared.errors import APIError, Conflict, InvalidRequest, Unavailable

log = logging.getLogger(__name__)

TOUCH_EVERY_S = 30  # last_used_at (idle takedown) is written at most this often per deployment
NO_RETRY = {"x-should-retry": "false"}  # the openai SDK retries 409s unless told not to
# OpenAI's parameters this server cannot honour, with the values that change nothing (those are accepted).
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0), "logit_bias": (None, {}),
    "logprobs": (None, False), "top_logprobs": (None, 0), "tools": (None, []), "tool_choice": (None, "none"),
    "parallel_tool_calls": (None, True, False), "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]), "audio": (None,), "prediction": (None,), "reasoning_effort": (None,),
    "service_tier": (None, "auto", "default"), "web_search_options": (None,), "functions": (None, []),
    "function_call": (None, "none"), "verbosity": (None, "medium"),
}


class UpstreamError(APIError):
    status_code = 502
    error_type = "server_error"


def check_request(request: ChatRequest) -> int | None:
    """The request's parameters this server cannot honour, refused by name; the completion's token limit."""
    for name, neutral in NEUTRAL.items():
        if getattr(request, name) not in neutral:
            raise InvalidRequest(f"'{name}' is not supported by this server's models.", param=name,
                                 code="unsupported_parameter")
    if request.n not in (None, 1):
        raise InvalidRequest("Only n=1 is supported: one completion per request.", param="n",
                             code="unsupported_value")
    if request.stream_options is not None and not request.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true.", param="stream_options",
                             code="invalid_value")
    if request.messages[-1].role == "assistant" and request.messages[-1].tool_calls:
        raise InvalidRequest("The last message calls tools: answer it with tool messages first.",
                             param="messages", code="invalid_value")
    limits = {request.max_tokens, request.max_completion_tokens} - {None}
    if len(limits) > 1:
        raise InvalidRequest("max_tokens and max_completion_tokens disagree; send one.",
                             param="max_completion_tokens", code="invalid_value")
    return limits.pop() if limits else None


@dataclass(frozen=True)
class Target:
    deployment: Deployment

    @property
    def request(self) -> dict[str, str]:
        return {"EndpointName": self.deployment.endpoint_name,
                "InferenceComponentName": self.deployment.component_name}


def _not_deployed(model_id: str, status: str | None = None) -> Conflict:
    if status == "creating":
        return Conflict(f"The model '{model_id}' is being deployed; try again when its deployment is in service "
                        "(GET /api/deployments).", param="model", code="model_not_ready", headers=NO_RETRY)
    return Conflict(f"The model '{model_id}' is not deployed. Deploy it first: POST /api/deployments "
                    f'{{"model": "{model_id}"}} (or the dashboard\'s Deployments page), then retry once it is '
                    "in service.", param="model", code="model_not_deployed", headers=NO_RETRY)


async def serving_target(model_id: str, user_id: str, deps: Deps, on_demand: bool | None = None,
                         wait_s: float | None = None) -> Target:
    """The caller's in-service deployment of the model; started and waited for (up to `wait_s`, by default
    DEPLOY_ON_DEMAND_WAIT_S) when on demand."""
    resolved = await resolve_model(model_id, user_id, deps)
    on_demand = deps.config.deploy_on_demand if on_demand is None else on_demand
    current = await deployments.active_for_model(deps, user_id, resolved.model_id)
    if current is not None and current.status == "in_service":
        return Target(current)
    if not on_demand:
        raise _not_deployed(model_id, current.status if current else None)
    if current is None:
        current, _ = await deployments.create_deployment(CreateDeployment(model=model_id), user_id, deps,
                                                         on_demand=True)
    deadline = time.monotonic() + (deps.config.on_demand_wait_s if wait_s is None else wait_s)
    while True:
        advanced = await deployments.advance(current.deployment_id, deps)
        if advanced is not None and advanced.status == "in_service":
            return Target(advanced)
        if advanced is None or advanced.status in ("failed", "deleting", "deleted"):
            reason = (advanced.failure_reason or advanced.delete_reason) if advanced else "it was removed"
            raise Unavailable(f"The deployment of '{model_id}' did not come up: {reason}.", code="deployment_failed")
        if time.monotonic() > deadline:
            raise Unavailable(f"'{model_id}' is still being deployed; retry in a minute.",
                              code="model_not_ready", headers={"Retry-After": "30"})
        await asyncio.sleep(1.0)


def _model_error(exc: ClientError) -> APIError:
    """SageMaker runtime's errors as the caller's: the container's 4xx is the caller's mistake."""
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    if code == "ModelError":
        original_status = int(exc.response.get("OriginalStatusCode") or 0)
        raw = exc.response.get("OriginalMessage") or error.get("Message", "")
        try:
            message = json.loads(raw).get("error") or raw
            message = message.get("message", raw) if isinstance(message, dict) else message
        except (ValueError, AttributeError):
            message = raw
        if 400 <= original_status < 500 and original_status != 429:
            context = "maximum context length" in str(message)
            return InvalidRequest(str(message), param="messages" if context else None,
                                  code="context_length_exceeded" if context else "invalid_value")
        if original_status in (429, 503):
            return Unavailable(f"The model server is busy: {message}", code="server_busy",
                               headers={"Retry-After": "2"})
        return UpstreamError(f"The model server failed: {message}", code="model_error")
    if code in ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException"):
        return Unavailable(f"SageMaker is busy or the model is not ready: {error.get('Message', code)}",
                           code="server_busy", headers={"Retry-After": "2"})
    return UpstreamError(f"SageMaker refused the invocation: {error.get('Message', code)}", code="invocation_failed")


class Invoker:
    """Invocations with a bound on how many run at once in this replica (the rest wait their turn)."""

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)

    async def complete(self, target: Target, body: dict[str, Any], deps: Deps) -> dict[str, Any]:
        async with self._slots:
            try:
                response = await deps.runtime.invoke_endpoint(
                    **target.request, ContentType="application/json", Accept="application/json",
                    Body=json.dumps(body).encode())
            except ClientError as exc:
                raise _model_error(exc) from exc
            raw = await response["Body"].read()
        await touch(target.deployment, deps)
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def stream(self, target: Target, body: dict[str, Any], deps: Deps) -> AsyncGenerator[bytes, None]:
        """The stream's bytes; it holds its slot until the stream ends. Errors before the first byte raise."""
        await self._slots.acquire()
        try:
            response = await deps.runtime.invoke_endpoint_with_response_stream(
                **target.request, ContentType="application/json", Accept="application/jsonlines",
                Body=json.dumps(body).encode())
        except ClientError as exc:
            self._slots.release()
            raise _model_error(exc) from exc
        except BaseException:
            self._slots.release()
            raise
        await touch(target.deployment, deps)
        return self._parts(response["Body"])

    async def _parts(self, events: Any) -> AsyncGenerator[bytes, None]:
        try:
            async for event in events:
                if "PayloadPart" in event:
                    yield event["PayloadPart"]["Bytes"]
                else:
                    failure = event.get("ModelStreamError") or event.get("InternalStreamFailure") or event
                    raise UpstreamError(f"The model server failed mid-stream: {failure.get('Message', failure)}",
                                        code="model_error")
        finally:
            self._slots.release()


async def touch(deployment: Deployment, deps: Deps) -> None:
    now = int(time.time())
    if now - (deployment.last_used_at or 0) >= TOUCH_EVERY_S:
        await deps.deployments.touch(deployment.deployment_id, now)


async def chat(request: ChatRequest, user_id: str, deps: Deps, invoker: Invoker) -> dict[str, Any]:
    max_tokens = check_request(request)
    await deps.limiter.hit(f"chat:{user_id}", deps.config.chat_requests_per_minute, 60)
    target = await serving_target(request.model, user_id, deps)
    raw = await invoker.complete(target, lmi.request_body(request, max_tokens, stream=False), deps)
    return lmi.completion(raw, request.model)


async def chat_stream(request: ChatRequest, user_id: str, deps: Deps, invoker: Invoker) -> AsyncIterator[str]:
    """Server-Sent Events as OpenAI sends them: `data: {chunk}` ... `data: [DONE]`. Everything that can be
    refused is refused before this returns (a plain JSON error); a failure mid-stream is an `error` event."""
    max_tokens = check_request(request)
    await deps.limiter.hit(f"chat:{user_id}", deps.config.chat_requests_per_minute, 60)
    target = await serving_target(request.model, user_id, deps)
    parts = await invoker.stream(target, lmi.request_body(request, max_tokens, stream=True), deps)
    include_usage = bool(request.stream_options and request.stream_options.include_usage)

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in lmi.chunks(lmi.json_lines(parts), request.model, include_usage):
                yield f"data: {json.dumps(chunk)}\n\n"
        except (APIError, ValueError) as exc:
            message = exc.message if isinstance(exc, APIError) else f"The model server's stream was malformed: {exc}"
            log.warning("stream failed", extra={"model": request.model, "error": message})
            error = {"message": message, "type": "server_error", "param": None, "code": "model_error"}
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        finally:
            await parts.aclose()  # frees the slot when the client leaves early
        yield "data: [DONE]\n\n"

    return events()
