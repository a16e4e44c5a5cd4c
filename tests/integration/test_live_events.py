"""Live updates over Server-Sent Events from two gateway replicas, on the emulated AWS over real HTTP.

Events go the production way: published to files' and training's SNS topics, fanned out by each replica's
own SQS queue, streamed to the browsers of their user only. A reconnection with `Last-Event-ID` to the
*other* replica resumes after the last event seen.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest

from services.gateway.app import build_app
from services.gateway.settings import Settings
from shared.contracts import resources
from shared.contracts.event import Event
from shared.contracts.files_events import FILE_VALIDATED, FileValidated
from shared.contracts.training_events import JOB_METRICS, JOB_RUNNING, JobMetrics, JobRunning
from shared.envelope import new_event
from tests.support.accounts import bearer, register
from tests.support.servers import serve


@dataclass
class Frame:
    event: str = "message"
    id: str | None = None
    data: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class Stream:
    """An SSE connection read on a thread; `next()` waits for a frame with a deadline."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.frames: queue.Queue[Frame | None] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=60))
        self._response = self._client.send(self._client.build_request("GET", url, headers=headers), stream=True)
        self.status_code = self._response.status_code
        self.headers = self._response.headers
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        frame = Frame()
        try:
            for line in self._response.iter_lines():
                if not line:
                    if frame.data or frame.id or frame.event != "message":
                        self.frames.put(frame)
                    frame = Frame()
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        frame.event = value
                    elif name == "id":
                        frame.id = value
                    elif name == "data":
                        frame.data = f"{frame.data}\n{value}" if frame.data else value
                    else:
                        frame.fields[name] = value
        except httpx.HTTPError:
            pass
        self.frames.put(None)

    def next(self, timeout_s: float = 20) -> Frame:
        try:
            frame = self.frames.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout_s}s") from None
        assert frame is not None, "the stream ended"
        return frame

    def ended(self, timeout_s: float = 20) -> bool:
        """Whether the server ended the stream within `timeout_s` (the frames before the end are skipped)."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.frames.get(timeout=left) is None:
                    return True
            except queue.Empty:
                break
        return False

    def close(self) -> None:
        self._response.close()
        self._client.close()


@pytest.fixture(scope="module")
def replicas(auth_url: str, files_url: str, training_url: str) -> Iterator[tuple[str, str]]:
    def settings() -> Settings:
        return Settings(auth_url=auth_url, files_url=files_url, training_url=training_url,
                        auth_jwks_url=f"{auth_url}/.well-known/jwks.json")

    with serve(build_app(settings())) as first, serve(build_app(settings())) as second:
        yield first, second


def _publish(provisioned: dict[str, Any], topic: str, payload: Event, user_id: str) -> str:
    envelope = new_event(payload, user_id=user_id)
    boto3.client("sns").publish(TopicArn=provisioned["topics"][topic], Message=envelope.model_dump_json(),
                                MessageAttributes={"type": {"DataType": "String", "StringValue": envelope.type}})
    return envelope.id


def _file_validated(user_id: str, file_id: str) -> FileValidated:
    return FileValidated(file_id=file_id, user_id=user_id, purpose="fine-tune", filename="train.jsonl", bytes=10,
                         s3_uri=f"s3://bucket/files/{user_id}/{file_id}", examples=1)


def _open(url: str, session: dict[str, Any], last_event_id: str | None = None) -> Stream:
    headers = {**bearer(session), **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    stream = Stream(f"{url}/api/events", headers)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    return stream


def _until(stream: Stream, event_type: str) -> Frame:
    while True:
        frame = stream.next()
        if frame.event == event_type:
            return frame


def test_each_user_gets_only_their_own_events_on_every_replica(replicas: tuple[str, str],
                                                               provisioned: dict[str, Any]) -> None:
    alice, bob = register(replicas[0]), register(replicas[0])
    on_first, on_second = _open(replicas[0], alice), _open(replicas[1], alice)
    bobs = _open(replicas[1], bob)
    try:
        for stream in (on_first, on_second, bobs):
            ready = _until(stream, "ready")
            assert json.loads(ready.data) == {"resumed": False}  # a fresh connection: load the page's state
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        bob_id, alice_id = bob["user"]["id"], alice["user"]["id"]
        _publish(provisioned, resources.FILES_TOPIC, _file_validated(bob_id, "file-bobs"), bob_id)
        sent = _publish(provisioned, resources.FILES_TOPIC, _file_validated(alice_id, file_id), alice_id)
        for stream in (on_first, on_second):  # each replica heard it on its own queue
            frame = _until(stream, FILE_VALIDATED)
            body = json.loads(frame.data)
            assert body["id"] == sent and body["data"]["file_id"] == file_id
            assert body["data"]["status"] == "processed"
            assert frame.id and frame.id.endswith(sent)
        frame = _until(bobs, FILE_VALIDATED)
        assert json.loads(frame.data)["data"]["file_id"] == "file-bobs"  # bob's own, never alice's
    finally:
        for stream in (on_first, on_second, bobs):
            stream.close()


def test_a_reconnection_to_another_replica_resumes_after_the_last_event(replicas: tuple[str, str],
                                                                          provisioned: dict[str, Any]) -> None:
    user = register(replicas[0])
    user_id = user["user"]["id"]
    first, witness = _open(replicas[0], user), _open(replicas[1], user)
    _until(first, "ready")
    _until(witness, "ready")
    _publish(provisioned, resources.TRAINING_TOPIC, JobRunning(job_id="ftjob-a", user_id=user_id, model="tiny"),
             user_id)
    seen = _until(first, JOB_RUNNING)
    first.close()

    # While disconnected: two more events; the second replica holds them too.
    missed = [_publish(provisioned, resources.TRAINING_TOPIC,
                       JobMetrics(job_id="ftjob-a", user_id=user_id, model="tiny", step=step, train_loss=2.0 / step),
                       user_id) for step in (1, 2)]
    for _ in missed:  # the second replica has heard both
        _until(witness, JOB_METRICS)
    witness.close()
    resumed = _open(replicas[1], user, last_event_id=seen.id)
    try:
        ready = _until(resumed, "ready")
        assert json.loads(ready.data) == {"resumed": True}
        replayed = [json.loads(_until(resumed, JOB_METRICS).data)["id"] for _ in missed]
        assert sorted(replayed) == sorted(missed)  # two events within a millisecond: either order
    finally:
        resumed.close()


def _sign_in(url: str, email: str, password: str = "correct horse battery") -> dict[str, Any]:
    response = httpx.post(f"{url}/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _still_open(stream: Stream, provisioned: dict[str, Any], user_id: str) -> bool:
    """The stream still relays the user's events (its end marker would come first)."""
    file_id = f"file-{uuid.uuid4().hex[:12]}"
    _publish(provisioned, resources.FILES_TOPIC, _file_validated(user_id, file_id), user_id)
    return json.loads(_until(stream, FILE_VALIDATED).data)["data"]["file_id"] == file_id


def test_signing_out_ends_that_sessions_open_streams_on_every_replica(replicas: tuple[str, str],
                                                                       provisioned: dict[str, Any]) -> None:
    first = register(replicas[0])
    second = _sign_in(replicas[0], first["user"]["email"])  # the same person, another session
    signed_out = [_open(url, first) for url in replicas]
    still_in = _open(replicas[1], second)
    try:
        for stream in (*signed_out, still_in):
            _until(stream, "ready")
        response = httpx.post(f"{replicas[0]}/auth/logout", headers=bearer(first))
        assert response.status_code == 204
        for stream in signed_out:
            assert stream.ended(), "a signed-out session's stream stayed open"
        assert _still_open(still_in, provisioned, first["user"]["id"])  # the other session's stream goes on
        again = httpx.get(f"{replicas[1]}/api/events", headers=bearer(first))
        assert again.status_code == 401  # and the reconnection is refused
    finally:
        for stream in (*signed_out, still_in):
            stream.close()


def test_revoking_an_api_key_ends_the_streams_it_opened(replicas: tuple[str, str],
                                                        provisioned: dict[str, Any]) -> None:
    person = register(replicas[0])
    created = httpx.post(f"{replicas[0]}/auth/api-keys", json={"name": "live"}, headers=bearer(person))
    assert created.status_code == 201, created.text
    key = created.json()
    program = Stream(f"{replicas[1]}/api/events", {"Authorization": f"Bearer {key['key']}"})
    browser = _open(replicas[1], person)
    try:
        assert program.status_code == 200
        _until(program, "ready")
        _until(browser, "ready")
        revoked = httpx.delete(f"{replicas[0]}/auth/api-keys/{key['id']}", headers=bearer(person))
        assert revoked.status_code == 200
        assert program.ended(), "a revoked API key's stream stayed open"
        assert _still_open(browser, provisioned, person["user"]["id"])  # the person's own session is not the key
    finally:
        program.close()
        browser.close()


def test_deleting_the_account_ends_all_its_streams(replicas: tuple[str, str]) -> None:
    person = register(replicas[0])
    streams = [_open(url, person) for url in replicas]
    try:
        for stream in streams:
            _until(stream, "ready")
        response = httpx.request("DELETE", f"{replicas[0]}/auth/me", headers=bearer(person),
                                 json={"password": "correct horse battery"})
        assert response.status_code == 204, response.text
        for stream in streams:
            assert stream.ended(), "a deleted user's stream stayed open"
    finally:
        for stream in streams:
            stream.close()


def test_the_stream_needs_a_valid_token(replicas: tuple[str, str]) -> None:
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}):
        response = httpx.get(f"{replicas[0]}/api/events", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_the_web_app_is_served_with_a_strict_content_security_policy(replicas: tuple[str, str]) -> None:
    home = httpx.get(replicas[0] + "/")
    assert home.status_code == 200 and "LLM Tuner" in home.text
    csp = home.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert home.headers["x-content-type-options"] == "nosniff"
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/nope.js"):
        response = httpx.get(replicas[0] + path)
        assert response.status_code == 404, path
