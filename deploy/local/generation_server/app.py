"""The HTTP edge, as SageMaker's container contract and LMI's schema have it, plus the emulator's routes.

- `GET /ping`: 200 once the model is loaded (the server only listens after that).
- `POST /invocations`: LMI's chat completions request; `application/json` answer, or `application/jsonlines`
  chunks when `"stream": true`. The request runs on the base model, or on the LoRA adapter named by the
  `X-Llmt-Adapter` header (set by the SageMaker emulator from the invoked inference component; not part of
  SageMaker's or LMI's API).
- `GET /_emulator/adapters`, `POST /_emulator/adapters` `{"name", "path"}`, `DELETE /_emulator/adapters/{name}`:
  the adapters loaded (the emulator's own control routes, for adapter inference components).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .chat_request import InvalidRequest, parse_chat_request
from .engine import Engine, Prepared, UnknownAdapter
from .protocol import ADAPTER_HEADER, ADAPTERS_PATH
from .responses import Completion, error_body
from .scheduler import QueueFull, Scheduler

log = logging.getLogger(__name__)

JSON_LINES = "application/jsonlines"
EXPECTED_ERRORS = (InvalidRequest, UnknownAdapter, QueueFull)


class _HeldStreamingResponse(StreamingResponse):
    """A streamed answer that gives its queue place back however the response ends (even unsent)."""

    def __init__(self, content: AsyncIterator[bytes], held: ExitStack, media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self._held = held

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._held.close()


def create_app(engine: Engine, max_waiting: int = 256) -> Starlette:
    scheduler = Scheduler(max_waiting)
    routes = [Route("/ping", ping, methods=["GET"]),
              Route("/invocations", invocations, methods=["POST"]),
              Route(ADAPTERS_PATH, list_adapters, methods=["GET"]),
              Route(ADAPTERS_PATH, load_adapter, methods=["POST"]),
              Route(ADAPTERS_PATH + "/{name}", unload_adapter, methods=["DELETE"])]
    app = Starlette(routes=routes, exception_handlers={Exception: _internal_error})
    app.state.engine, app.state.scheduler = engine, scheduler
    return app


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("request failed", exc_info=exc)
    return _error(500, f"The model server failed: {type(exc).__name__}: {exc}")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body(message, status), status_code=status)


async def ping(request: Request) -> Response:
    return JSONResponse({"status": "Healthy"})


async def invocations(request: Request) -> Response:
    engine: Engine = request.app.state.engine
    scheduler: Scheduler = request.app.state.scheduler
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        return _error(400, f"The request body is not valid JSON: {exc}")
    held = ExitStack()
    try:
        chat = parse_chat_request(body)
        prepared = await run_in_threadpool(engine.prepare, chat, request.headers.get(ADAPTER_HEADER) or None)
        held.enter_context(scheduler.slot())
        if chat.score:
            with held:
                return JSONResponse(await scheduler.call(engine.score, prepared))
        if chat.stream:
            return _HeldStreamingResponse(_stream_lines(request, prepared), held, JSON_LINES)
        with held:
            return JSONResponse(await _complete(request, prepared))
    except EXPECTED_ERRORS as exc:
        held.close()
        return _error(exc.status_code, exc.message)


async def _complete(request: Request, prepared: Prepared) -> dict[str, Any]:
    engine: Engine = request.app.state.engine
    scheduler: Scheduler = request.app.state.scheduler
    completion, text, finish = Completion(len(prepared.prompt_ids)), [], None
    async for piece in scheduler.stream(partial(engine.generate, prepared), request.is_disconnected):
        text.append(piece.text)
        completion.completion_tokens, finish = piece.completion_tokens, piece.finish_reason
    return completion.message("".join(text), finish)


async def _stream_lines(request: Request, prepared: Prepared) -> AsyncIterator[bytes]:
    """The same decode loop as `_complete`, one JSON line per piece of text. A failure after the first line
    ends the response unfinished (no last chunk): the caller sees a broken stream, as with a real container."""
    engine: Engine = request.app.state.engine
    scheduler: Scheduler = request.app.state.scheduler
    completion = Completion(len(prepared.prompt_ids))
    async for piece in scheduler.stream(partial(engine.generate, prepared), request.is_disconnected):
        completion.completion_tokens = piece.completion_tokens
        if piece.text or piece.finish_reason:
            yield completion.chunk_line(piece.text, piece.finish_reason)
    if prepared.request.include_usage:
        yield completion.usage_line()


async def list_adapters(request: Request) -> Response:
    engine: Engine = request.app.state.engine
    return JSONResponse({"adapters": await request.app.state.scheduler.call(engine.adapters)})


async def load_adapter(request: Request) -> Response:
    """Load (or replace) a PEFT adapter from a local directory. Runs on the generation thread, between two
    requests, so no request sees a half-loaded adapter."""
    engine: Engine = request.app.state.engine
    try:
        body = json.loads(await request.body() or b"null")
        name, path = body["name"], body["path"]
        if not isinstance(name, str) or not name or not isinstance(path, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _error(400, 'The body must be {"name": str, "path": str}.')
    try:
        await request.app.state.scheduler.call(engine.load_adapter, name, path)
    except InvalidRequest as exc:
        return _error(400, exc.message)
    except (OSError, ValueError) as exc:
        log.exception("adapter load failed", extra={"adapter": name, "path": path})
        return _error(400, f"Could not load the adapter from {path}: {exc}")
    return JSONResponse({"name": name, "loaded": True})


async def unload_adapter(request: Request) -> Response:
    engine: Engine = request.app.state.engine
    name = request.path_params["name"]
    try:
        await request.app.state.scheduler.call(engine.unload_adapter, name)
    except UnknownAdapter as exc:
        return _error(404, exc.message)
    return JSONResponse({"name": name, "loaded": False})
