"""SageMaker's runtime API (REST JSON, as botocore's `sagemaker-runtime` client speaks it), on the emulator's
port: InvokeEndpoint and InvokeEndpointWithResponseStream, forwarded to the inference component's generation
server.

- `POST /endpoints/{EndpointName}/invocations`: the container's body and Content-Type, with
  `x-Amzn-Invoked-Production-Variant`.
- `POST /endpoints/{EndpointName}/invocations-response-stream`: the container's bytes as they come, each
  chunk one `PayloadPart` event of AWS's event stream; `X-Amzn-SageMaker-Content-Type` is the container's
  content type. A failure before the first byte is a plain error; after it, a `ModelStreamError` event.
- Errors as the runtime answers them: `ValidationError` (400: unknown endpoint or component, component not
  in service, missing X-Amzn-SageMaker-Inference-Component header), `ModelError` (424: the container answered
  non-2xx; OriginalStatusCode, OriginalMessage and LogStreamArn), `ServiceUnavailable` (503: the container is
  not reachable).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from deploy.local.generation_server.protocol import ADAPTER_HEADER

from .eventstream import exception_event, payload_parts
from .hosting import NoTarget, Target

log = logging.getLogger(__name__)

COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"
EVENT_STREAM = "application/vnd.amazon.eventstream"
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's request payload limit
STATUS_OF = {"ValidationError": 400, "ModelError": 424, "ServiceUnavailable": 503, "InternalFailure": 500}

Resolver = Callable[[str, str | None], Target]  # (endpoint, component) -> where it goes, or NoTarget


def runtime_routes() -> list[Route]:
    """The two routes, answered by the `Invoker` at `app.state.invoker`."""

    async def invoke(request: Request) -> Response:
        return await request.app.state.invoker.invoke(request)

    async def invoke_stream(request: Request) -> Response:
        return await request.app.state.invoker.invoke_stream(request)

    return [Route("/endpoints/{endpoint}/invocations", invoke, methods=["POST"]),
            Route("/endpoints/{endpoint}/invocations-response-stream", invoke_stream, methods=["POST"])]


class InvocationFailed(Exception):
    def __init__(self, error_type: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.error_type, self.message, self.fields = error_type, message, fields


class Invoker:
    def __init__(self, resolve: Resolver, region: str, account: str, timeout_s: float) -> None:
        self._resolve, self._region, self._account = resolve, region, account
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))

    async def close(self) -> None:
        await self._client.aclose()

    async def invoke(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            target, upstream = await self._prepare(request, request.headers.get("accept"))
            try:
                answer = await self._client.send(upstream)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            if answer.status_code >= 300:
                raise self._model_error(target, answer.status_code, answer.content)
        except InvocationFailed as exc:
            return _error(exc, request_id)
        headers = {VARIANT_HEADER: target.variant, "x-amzn-RequestId": request_id}
        if CUSTOM_ATTRIBUTES_HEADER in answer.headers:
            headers[CUSTOM_ATTRIBUTES_HEADER] = answer.headers[CUSTOM_ATTRIBUTES_HEADER]
        return Response(answer.content, media_type=answer.headers.get("content-type", "application/json"),
                        headers=headers)

    async def invoke_stream(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            target, upstream = await self._prepare(request, request.headers.get("x-amzn-sagemaker-accept"))
            try:
                answer = await self._client.send(upstream, stream=True)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            if answer.status_code >= 300:
                body = await answer.aread()
                await answer.aclose()
                raise self._model_error(target, answer.status_code, body)
        except InvocationFailed as exc:
            return _error(exc, request_id)
        headers = {VARIANT_HEADER: target.variant, "x-amzn-RequestId": request_id,
                   "X-Amzn-SageMaker-Content-Type": answer.headers.get("content-type", "application/octet-stream")}
        return StreamingResponse(_events(answer), media_type=EVENT_STREAM, headers=headers)

    async def _prepare(self, request: Request, accept: str | None) -> tuple[Target, httpx.Request]:
        endpoint = request.path_params["endpoint"]
        component = request.headers.get(COMPONENT_HEADER)
        try:
            target = await run_in_threadpool(self._resolve, endpoint, component)
        except NoTarget as exc:
            raise InvocationFailed(exc.error_type, exc.message) from exc
        body = await request.body()
        if len(body) > MAX_PAYLOAD_BYTES:
            raise InvocationFailed("ValidationError", f"The request payload ({len(body)} bytes) exceeds the "
                                                      f"{MAX_PAYLOAD_BYTES} bytes InvokeEndpoint accepts.")
        headers = {"Content-Type": request.headers.get("content-type", "application/octet-stream")}
        if accept:
            headers["Accept"] = accept
        if CUSTOM_ATTRIBUTES_HEADER in request.headers:
            headers[CUSTOM_ATTRIBUTES_HEADER] = request.headers[CUSTOM_ATTRIBUTES_HEADER]
        if target.adapter:
            headers[ADAPTER_HEADER] = target.adapter
        return target, self._client.build_request("POST", f"{target.url}/invocations", content=body,
                                                  headers=headers)

    def _model_error(self, target: Target, status: int, body: bytes) -> InvocationFailed:
        original = body.decode("utf-8", "replace")
        kind = "client" if status < 500 else "server"
        group = target.log_stream_arn.split(":log-group:", 1)[1].split(":log-stream:", 1)[0]
        message = (f'Received {kind} error ({status}) from primary with message "{original}". See '
                   f"https://{self._region}.console.aws.amazon.com/cloudwatch/home?region={self._region}"
                   f"#logEventViewer:group={group} in account {self._account} for more information.")
        return InvocationFailed("ModelError", message, OriginalStatusCode=status, OriginalMessage=original,
                                LogStreamArn=target.log_stream_arn,
                                ErrorCode=f"{kind.upper()}_ERROR_FROM_MODEL")

    @staticmethod
    def _unreachable(exc: httpx.HTTPError) -> InvocationFailed:
        log.warning("model server unreachable", extra={"error": str(exc)})
        return InvocationFailed("ServiceUnavailable", f"The inference component's container did not answer: "
                                                      f"{type(exc).__name__}: {exc}")


async def _events(answer: httpx.Response) -> AsyncIterator[bytes]:
    """The container's bytes as they arrive, one PayloadPart event each; a broken stream ends with a
    ModelStreamError event. Closing the upstream response (also when our client leaves) tells the container
    to stop generating."""
    try:
        async for chunk in answer.aiter_raw():
            if chunk:
                yield payload_parts(chunk)
    except httpx.HTTPError as exc:
        log.warning("model stream broken", extra={"error": str(exc)})
        yield exception_event("ModelStreamError", {
            "Message": f"The model's response stream broke: {type(exc).__name__}: {exc}",
            "ErrorCode": "StreamBroken"})
    finally:
        await answer.aclose()


def _error(exc: InvocationFailed, request_id: str) -> Response:
    body = {"Message": exc.message, **exc.fields}
    return Response(json.dumps(body), status_code=STATUS_OF[exc.error_type], media_type="application/json",
                    headers={"x-amzn-ErrorType": exc.error_type, "x-amzn-RequestId": request_id})
