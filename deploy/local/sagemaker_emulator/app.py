"""The HTTP edge: SageMaker's JSON 1.1 protocol (POST / with `X-Amz-Target: SageMaker.<Operation>`), the
runtime API's invocation routes (runtime.py), and `bootstrap()`, which builds the AWS clients, the stores,
the runner, the hosting and the event publisher in one place.

TEST-ONLY, no part of SageMaker's API: `POST /_emulator/jobs/{name}/interrupt` interrupts a managed-spot job
that is training, as a spot interruption would (SAGEMAKER_EMULATOR_SPOT_RESTART_DELAY_SECONDS: the unbilled
wait before it starts again from its checkpoints)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .endpoint_records import hosting_arn
from .endpoint_store import EndpointStore
from .errors import SageMakerError, SerializationError, UnknownOperation
from .handlers import OPERATIONS, Deps
from .hosting import HOSTING_DIR, Hosting
from .job_store import JobStore
from .runner import JobRunner
from .runtime import Invoker, runtime_routes
from .settings import Settings
from .state_change_events import EventPublisher

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker"
RESTART_REASON = "InternalServerError: the SageMaker emulator restarted while the job was running"


@dataclass
class Runtime:
    deps: Deps
    publisher: EventPublisher

    def close(self) -> None:
        self.deps.hosting.shutdown()
        self.deps.runner.shutdown()
        self.publisher.close()


def aws_client(service: str, settings: Settings) -> Any:
    """Endpoints and credentials from botocore's standard configuration; timeouts and retries explicit."""
    config = Config(region_name=settings.aws_default_region, connect_timeout=settings.aws_connect_timeout_s,
                    read_timeout=settings.aws_read_timeout_s, max_pool_connections=32,
                    retries={"mode": settings.aws_retry_mode, "max_attempts": settings.aws_max_attempts})
    return boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]


def bootstrap(settings: Settings) -> Runtime:
    publisher = EventPublisher(aws_client("events", settings), settings.event_bus)
    store = JobStore(settings.workdir.resolve(), on_change=publisher.job_changed)
    store.load(interrupted_reason=RESTART_REASON)
    s3, logs = aws_client("s3", settings), aws_client("logs", settings)
    runner = JobRunner(settings, store, s3=s3, logs=logs)
    region, account = settings.aws_default_region, settings.account_id
    endpoints = EndpointStore(settings.workdir.resolve() / HOSTING_DIR,
                              lambda kind, name: hosting_arn(region, account, kind, name))
    endpoints.load()
    hosting = Hosting(settings, endpoints, s3=s3, logs=logs)
    hosting.restore()
    return Runtime(Deps(settings, store, runner, hosting), publisher)


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = bootstrap(settings)
        app.state.deps = runtime.deps
        app.state.invoker = Invoker(runtime.deps.hosting.target, settings.aws_default_region,
                                    settings.account_id, settings.invocation_timeout_s)
        log.info("sagemaker emulator ready",
                 extra={"workdir": str(settings.workdir), "max_jobs": settings.max_jobs})
        try:
            yield
        finally:
            log.info("sagemaker emulator stopping its jobs and model servers")
            await app.state.invoker.close()
            await run_in_threadpool(runtime.close)

    routes = [Route("/", dispatch, methods=["POST"]), Route("/health", health, methods=["GET"]),
              Route("/_emulator/jobs/{name}/interrupt", interrupt, methods=["POST"]), *runtime_routes()]
    return Starlette(routes=routes, lifespan=lifespan)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def interrupt(request: Request) -> Response:
    """TEST-ONLY, not part of SageMaker's API: a spot interruption of a managed-spot job that is training
    (see JobRunner.interrupt). 202 once asked for; SageMaker's error shapes otherwise."""
    name = request.path_params["name"]
    request_id = str(uuid.uuid4())
    try:
        await run_in_threadpool(request.app.state.deps.runner.interrupt, name)
    except SageMakerError as exc:
        return _response({"__type": exc.error_type, "message": exc.message}, exc.status_code, request_id,
                         error_type=exc.error_type)
    return _response({"TrainingJobName": name, "Interrupting": True}, 202, request_id)


async def dispatch(request: Request) -> Response:
    request_id = str(uuid.uuid4())
    target = request.headers.get("x-amz-target", "")
    service, _, operation = target.partition(".")
    try:
        handler = OPERATIONS.get(operation) if service == TARGET_PREFIX else None
        if handler is None:
            raise UnknownOperation(
                f"Operation {target or '(no X-Amz-Target header)'} is not supported by the local SageMaker "
                f"emulator; it answers {', '.join(sorted(OPERATIONS))}")
        params = _parse_body(await request.body())
        result = await run_in_threadpool(handler, params, request.app.state.deps)
    except SageMakerError as exc:
        log.info("request refused", extra={"operation": operation, "error_type": exc.error_type,
                                           "error": exc.message, "request_id": request_id})
        return _response({"__type": exc.error_type, "message": exc.message}, exc.status_code, request_id,
                         error_type=exc.error_type)
    except Exception:
        log.exception("request failed", extra={"operation": operation, "request_id": request_id})
        return _response({"__type": "InternalFailure", "message": "The emulator failed; see its log."}, 500,
                         request_id, error_type="InternalFailure")
    return _response(result, 200, request_id)


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        params = json.loads(body or b"{}")
    except ValueError as exc:
        raise SerializationError(f"The request body is not JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise SerializationError("The request body must be a JSON object")
    return params


def _response(body: dict[str, Any], status: int, request_id: str, error_type: str | None = None) -> Response:
    headers = {"x-amzn-RequestId": request_id}
    if error_type:
        headers["x-amzn-ErrorType"] = error_type
    return Response(json.dumps(body), status_code=status, media_type=CONTENT_TYPE, headers=headers)
