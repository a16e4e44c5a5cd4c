"""Pure parts of shared/: wire parsing, the retry plan, settings, the error envelope, JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, SecretStr

from shared.body_limit import BodyLimitMiddleware, BodyLimits
from shared.consumer import plan_retry
from shared.contracts.event import Event
from shared.contracts.files_events import FileUploaded
from shared.contracts.sagemaker_events import TRAINING_JOB_STATE_CHANGED
from shared.envelope import MalformedMessage, new_event, parse_wire
from shared.errors import NotFound
from shared.logging import JsonFormatter, request_id_var
from shared.settings import ServiceSettings, is_placeholder
from shared.web import create_app


def test_parse_wire_reads_a_direct_envelope_and_an_sns_notification() -> None:
    uploaded = FileUploaded(file_id="file-1", user_id="u1", purpose="fine-tune", filename="a.jsonl", bytes=3,
                            s3_uri="s3://b/files/u1/file-1")
    event = new_event(uploaded, user_id="u1", correlation_id="req_1")
    direct = parse_wire(event.model_dump_json())
    wrapped = parse_wire(json.dumps({"Type": "Notification", "Message": event.model_dump_json()}))
    assert direct == wrapped == event


def test_parse_wire_turns_a_sagemaker_eventbridge_event_into_an_envelope() -> None:
    body = {"version": "0", "id": "abc", "detail-type": "SageMaker Training Job State Change",
            "source": "aws.sagemaker", "time": "2026-11-26T07:00:00Z",
            "detail": {"TrainingJobName": "ftjob-x", "TrainingJobStatus": "Completed"}}
    envelope = parse_wire(json.dumps(body))
    assert envelope.type == TRAINING_JOB_STATE_CHANGED and envelope.id == "evb_abc"
    assert envelope.data["TrainingJobStatus"] == "Completed"


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", json.dumps({"no": "type"}),
                                 json.dumps({"source": "aws.ec2", "detail-type": "EC2 State", "detail": {}})])
def test_parse_wire_rejects_what_it_cannot_read(raw: str) -> None:
    with pytest.raises(MalformedMessage):
        parse_wire(raw)


class _Ping(Event):
    TYPE = "test.pinged"


def test_new_event_carries_the_request_id_as_correlation_id() -> None:
    token = request_id_var.set("req_abc")
    try:
        assert new_event(_Ping()).correlation_id == "req_abc"
    finally:
        request_id_var.reset(token)


def test_retry_plan_backs_off_then_dead_letters() -> None:
    assert [plan_retry(n, 5).delay_s for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert plan_retry(5, 5).to_dlq and plan_retry(9, 5).to_dlq
    assert plan_retry(1, 5, permanent=True).to_dlq
    assert plan_retry(1, 5, requested_delay_s=10_000).delay_s == 300


class _Secretive(ServiceSettings):
    api_secret: SecretStr = SecretStr("")


@pytest.mark.parametrize("value", ["", "your-jwt-secret", "changeme", "dev-secret", "your_client_secret"])
def test_placeholder_secrets_are_refused_outside_development(value: str) -> None:
    assert is_placeholder(value)
    _Secretive(environment="development", api_secret=SecretStr(value))  # fine while developing
    with pytest.raises(ValueError, match="API_SECRET"):
        _Secretive(environment="production", api_secret=SecretStr(value))


def test_a_real_secret_is_accepted_in_production() -> None:
    settings = _Secretive(environment="production", api_secret=SecretStr("kV9#q2-8fJ3x!mP0zL7w"))
    assert settings.api_secret.get_secret_value().startswith("kV9")


class _Body(BaseModel):
    n: int


def _app() -> FastAPI:
    app = create_app("test", limits=BodyLimits(1024 * 1024))

    @app.post("/things")
    async def things(body: _Body) -> dict[str, int]:
        return {"n": body.n}

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("No such thing.")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("bug")

    return app


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "param"), [
    ("get", "/nowhere", {}, 404, None),
    ("get", "/missing", {}, 404, None),
    ("post", "/things", {"content": b"{bad", "headers": {"content-type": "application/json"}}, 400, None),
    ("post", "/things", {"json": {"n": "not a number"}}, 400, "n"),
    ("post", "/things", {"json": {}}, 400, "n"),
    ("get", "/crash", {}, 500, None),
])
def test_every_error_is_the_openai_envelope(method: str, path: str, kwargs: dict[str, object], status: int,
                                           param: str | None) -> None:
    client = TestClient(_app(), raise_server_exceptions=False)
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert response.headers["x-request-id"].startswith("req_")


def test_request_id_is_taken_from_the_caller_and_echoed() -> None:
    client = TestClient(_app())
    assert client.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert client.get("/healthz", headers={"x-request-id": "bad id\n"}).headers["x-request-id"] != "bad id\n"


def test_json_logs_carry_the_request_id_and_extras() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.job_id = "ftjob-1"
    token = request_id_var.set("req_9")
    try:
        line = json.loads(JsonFormatter("svc").format(record))
    finally:
        request_id_var.reset(token)
    assert line["msg"] == "hello world" and line["request_id"] == "req_9" and line["job_id"] == "ftjob-1"
    assert line["service"] == "svc" and line["level"] == "info"


def test_a_clients_config_overrides_the_settings_where_asked() -> None:
    from shared.aws import client_config
    from shared.settings import ServiceSettings

    settings = ServiceSettings()
    plain = client_config(settings)
    assert plain.read_timeout == settings.aws_read_timeout_s and plain.max_pool_connections == 50
    invocation = client_config(settings, read_timeout=600.0, retries={"mode": "standard", "max_attempts": 1},
                               max_pool_connections=72)
    assert invocation.read_timeout == 600.0 and invocation.retries == {"mode": "standard", "max_attempts": 1}
    assert invocation.max_pool_connections == 72 and invocation.connect_timeout == settings.aws_connect_timeout_s


# ---- request body limits ----------------------------------------------------------------------------------

class _Asgi:
    """One request through an ASGI app, its body in `chunks`, counting how many of them the app was given."""

    def __init__(self, app: Any, method: str, path: str, chunks: list[bytes], headers: dict[str, str]) -> None:
        self.app, self.chunks, self.taken = app, chunks, 0
        self.sent: list[dict[str, Any]] = []
        self.scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
                      "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                      "http_version": "1.1", "scheme": "http", "server": ("test", 80), "client": ("c", 1),
                      "root_path": "", "app": None}

    async def receive(self) -> dict[str, Any]:
        if self.taken == len(self.chunks):
            return {"type": "http.disconnect"}
        self.taken += 1
        return {"type": "http.request", "body": self.chunks[self.taken - 1], "more_body": self.taken < len(self.chunks)}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def run(self) -> tuple[int, dict[str, Any]]:
        asyncio.run(self.app(self.scope, self.receive, self.send))
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent  # one answer, never the app's on top of the 413
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return starts[0]["status"], json.loads(body)


def _limited_app(limits: BodyLimits) -> FastAPI:
    app = create_app("test", limits=limits)

    @app.post("/things")
    @app.post("/uploads/{upload_id}/complete")
    async def things(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


CHUNK = b"x" * 1024


def test_a_body_declared_over_the_limit_is_refused_before_a_byte_is_read() -> None:
    call = _Asgi(_limited_app(BodyLimits(4096)), "POST", "/things", [CHUNK] * 8, {"content-length": "8192"})
    status, body = call.run()
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert call.taken == 0


def test_a_chunked_body_is_cut_off_as_it_passes_the_limit() -> None:
    call = _Asgi(_limited_app(BodyLimits(4096)), "POST", "/things", [CHUNK] * 1000, {})
    status, body = call.run()
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert call.taken == 5  # the chunk that passed 4096 bytes was the last one read


def test_a_body_within_its_limit_reaches_the_route_and_a_route_may_take_more() -> None:
    limits = BodyLimits(4096, {("POST", "/uploads/{upload_id}/complete"): 16384})
    assert _Asgi(_limited_app(limits), "POST", "/things", [CHUNK] * 4, {}).run() == (200, {"bytes": 4096})
    complete = _Asgi(_limited_app(limits), "POST", "/uploads/u1/complete", [CHUNK] * 16, {})
    assert complete.run() == (200, {"bytes": 16384})
    assert _Asgi(_limited_app(limits), "POST", "/uploads/u1/complete", [CHUNK] * 17, {}).run()[0] == 413
    assert limits.for_request("POST", "/uploads/u1/x/complete") == 4096  # `{upload_id}` is one segment
    assert limits.for_request("PUT", "/uploads/u1/complete") == 4096  # another method: the default


def test_a_response_already_under_way_is_not_replaced_and_its_app_gets_no_more_body() -> None:
    seen: list[dict[str, Any]] = []

    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (message := await receive())["type"] == "http.request":
            seen.append(message)
        await send({"type": "http.response.body", "body": b"{}"})

    call = _Asgi(BodyLimitMiddleware(streaming, BodyLimits(4096)), "POST", "/things", [CHUNK] * 100, {})
    assert call.run() == (200, {})
    assert len(seen) == 4 and call.taken == 5
