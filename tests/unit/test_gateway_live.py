"""The gateway's live-update hub and SSE body, without AWS: routing by user, replay, limits, contracts."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from services.gateway.live import RELAYED, Credential, LiveHub, cursor_ms, live_event, stream
from shared.consumer import InvalidPayload
from shared.contracts.files_events import FILE_VALIDATED, FileValidated
from shared.contracts.inference_events import DEPLOYMENT_IN_SERVICE, DeploymentInService
from shared.contracts.resources import GATEWAY_FILE_EVENTS, GATEWAY_INFERENCE_EVENTS, GATEWAY_TRAINING_EVENTS
from shared.contracts.training_events import JOB_METRICS, JobMetrics
from shared.envelope import Envelope, new_event

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _event(user: str, seconds: float, step: int = 1) -> Envelope:
    """A metrics event of `user`'s job at T0 + `seconds`."""
    envelope = new_event(JobMetrics(job_id="ftjob-1", user_id=user, model="tiny", step=step), user_id=user)
    return envelope.model_copy(update={"occurred_at": T0 + timedelta(seconds=seconds)})


def _file_validated(user: str, file_id: str) -> FileValidated:
    return FileValidated(file_id=file_id, user_id=user, purpose="fine-tune", filename="train.jsonl", bytes=10,
                         s3_uri=f"s3://bucket/files/{user}/{file_id}", examples=1)


def _hub(now_s: float = 0.0, **kwargs: Any) -> LiveHub:
    clock = {"now": T0.timestamp() - 60}
    hub = LiveHub(clock=lambda: clock["now"], **kwargs)
    clock["now"] = T0.timestamp() + now_s
    return hub


def test_every_event_the_live_queues_subscribe_to_has_its_contract_model() -> None:
    assert sorted(RELAYED) == sorted({*GATEWAY_FILE_EVENTS, *GATEWAY_TRAINING_EVENTS, *GATEWAY_INFERENCE_EVENTS})


def test_cursors_sort_by_time_and_read_back() -> None:
    early, late = live_event(_event("u", 1)), live_event(_event("u", 2))
    assert early < late and cursor_ms(early.cursor) == int((T0.timestamp() + 1) * 1000)
    assert cursor_ms("garbage") is None and cursor_ms(None) is None


async def test_events_reach_only_their_users_streams() -> None:
    hub = _hub()
    alice, bob = hub.open("alice"), hub.open("bob")
    await hub.handle(new_event(_file_validated("alice", "a"), user_id="alice"))
    await hub.handle(new_event(_file_validated("bob", "b")))  # the user in the payload only
    got_a, got_b = alice.get_nowait(), bob.get_nowait()
    assert got_a is not None and json.loads(got_a.payload)["data"]["file_id"] == "a"
    assert got_b is not None and json.loads(got_b.payload)["data"]["file_id"] == "b"
    assert alice.empty() and bob.empty()


async def test_deployment_events_reach_their_owner() -> None:
    hub = _hub()
    owner, other = hub.open("alice"), hub.open("bob")
    await hub.handle(new_event(DeploymentInService(deployment_id="dep-1", user_id="alice", model="m",
                                                   instance_type="ml.m5.large", status="in_service")))
    got = owner.get_nowait()
    assert got is not None and got.type == DEPLOYMENT_IN_SERVICE and other.empty()


async def test_a_browser_gets_the_event_as_published() -> None:
    hub = _hub()
    stream_ = hub.open("u")
    published = new_event(_file_validated("u", "f"), user_id="u")
    published.data["added_later"] = {"by": "a newer producer"}  # a field the contract does not know yet
    await hub.handle(published)
    got = stream_.get_nowait()
    assert got is not None and got.type == FILE_VALIDATED
    assert json.loads(got.payload) == {"id": published.id, "type": FILE_VALIDATED,
                                       "occurred_at": published.occurred_at.isoformat(), "data": published.data}


async def test_a_payload_that_does_not_match_its_contract_is_invalid_and_reaches_nobody() -> None:
    hub = _hub()
    stream_ = hub.open("u")
    for data in ({"file_id": "f"}, {**_file_validated("u", "f").model_dump(), "bytes": "many"}):
        with pytest.raises(InvalidPayload) as invalid:
            await hub.handle(Envelope(type=FILE_VALIDATED, user_id="u", data=data))
        assert invalid.value.event_type == FILE_VALIDATED
    with pytest.raises(InvalidPayload):
        await hub.handle(Envelope(type=JOB_METRICS, user_id="u", data={"job_id": "ftjob-1", "step": "one"}))
    assert stream_.empty() and hub.replay("u", live_event(_event("u", -1)).cursor)[0] == []


async def test_resume_replays_what_came_after_the_last_id() -> None:
    hub = _hub(now_s=10)
    for second in (1, 2, 3):
        await hub.handle(_event("u", second, step=second))
    first = live_event(_event("u", 1))  # a different envelope id at the same instant: compare by time
    events, covered = hub.replay("u", first.cursor)
    assert covered and [json.loads(e.payload)["data"]["step"] for e in events] == [1, 2, 3]  # slack: 1 included
    seen = hub._recent["u"][0].cursor  # the exact id the client saw is never sent again
    events, covered = hub.replay("u", seen)
    assert covered and [json.loads(e.payload)["data"]["step"] for e in events] == [2, 3]


async def test_a_gap_the_buffer_cannot_vouch_for_is_not_resumed() -> None:
    hub = _hub(now_s=10, buffer_per_user=2)
    for second in (1, 2, 3):  # the first one falls out of the buffer
        await hub.handle(_event("u", second))
    before_all = live_event(_event("u", 0.5)).cursor
    assert hub.replay("u", before_all)[1] is False
    before_start = live_event(_event("u", -120)).cursor  # before this replica existed
    assert hub.replay("u", before_start)[1] is False
    assert hub.replay("u", None) == ([], False)


async def test_the_stream_sends_ready_replay_live_and_ends_at_token_expiry() -> None:
    hub = _hub(now_s=10)
    await hub.handle(_event("u", 1, step=1))
    last = live_event(_event("u", 0.9)).cursor
    body = stream(hub, "u", last, until=T0.timestamp() + 3600, clock=lambda: T0.timestamp() + 10,
                  keepalive_s=0.05)
    async with asyncio.timeout(10):
        frames = [await anext(body) for _ in range(3)]
        await hub.handle(_event("u", 11, step=2))  # a live one, after the replay
        live = await anext(body)
        while live.startswith(":"):  # keep-alive comments meanwhile
            live = await anext(body)
    await body.aclose()
    assert frames[0] == "retry: 3000\n\n"
    assert frames[1] == 'event: ready\ndata: {"resumed": true}\n\n'
    assert '"step":1' in frames[2] and '"step":2' in live
    assert hub.connected("u") == 0  # closed streams leave nothing behind

    async with asyncio.timeout(10):
        expired = [f async for f in stream(hub, "u", None, until=T0.timestamp() + 9,
                                           clock=lambda: T0.timestamp() + 10)]
    assert len(expired) == 2  # retry and ready, then the end: the client reconnects with a fresh token


async def test_a_client_that_does_not_read_is_cut_off() -> None:
    hub = _hub(queue_size=2)
    queue = hub.open("u")
    for second in range(5):
        await hub.handle(_event("u", second))
    assert hub.connected("u") == 0
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    assert items[-1] is None  # the end marker: its stream closes, the client resumes on reconnect


async def test_a_stopping_replica_ends_every_stream_at_once() -> None:
    hub = _hub(now_s=10)
    body = stream(hub, "u", None, until=T0.timestamp() + 3600, clock=lambda: T0.timestamp() + 10, keepalive_s=60)
    async with asyncio.timeout(10):
        assert [await anext(body) for _ in range(2)][1].startswith("event: ready")
        hub.close_all()
        rest = [frame async for frame in body]
    assert rest == [] and hub.connected("u") == 0


async def test_a_revoked_session_ends_its_stream_and_leaves_the_users_others_open() -> None:
    hub = _hub(now_s=10)
    open_body = partial(stream, hub, "u", None, until=T0.timestamp() + 3600, clock=lambda: T0.timestamp() + 10,
                        keepalive_s=60)
    signed_out, still_in = open_body(credential=Credential(session_id="s1")), open_body(credential=Credential("s2"))
    async with asyncio.timeout(10):
        for body in (signed_out, still_in):
            assert [await anext(body) for _ in range(2)][1].startswith("event: ready")
        assert hub.end("u", session_id="s1") == 1
        assert [frame async for frame in signed_out] == []
        await hub.handle(_event("u", 11, step=2))
        assert '"step":2' in await anext(still_in)  # the other session's stream goes on
    await still_in.aclose()
    assert hub.connected("u") == 0


async def test_a_stream_revoked_between_its_check_and_its_opening_ends_at_once() -> None:
    hub = _hub(now_s=10)
    body = stream(hub, "u", None, until=T0.timestamp() + 3600, clock=lambda: T0.timestamp() + 10,
                  credential=Credential(session_id="s1"), revoked=lambda: True)
    async with asyncio.timeout(10):
        assert [frame async for frame in body] == []
    assert hub.connected("u") == 0


def test_the_web_apps_event_names_come_from_the_contracts() -> None:
    """/static/events.js is written from shared/contracts/, so the browser listens for exactly what is published."""
    from services.gateway import browser_events
    from shared.contracts import files_events, inference_events, training_events

    source = browser_events.module_source()
    exported = dict(line.removeprefix("export const ").rstrip(";").split(" = ", 1)
                    for line in source.splitlines() if line.startswith("export const "))
    assert json.loads(exported["FILE_VALIDATED"]) == files_events.FILE_VALIDATED
    assert json.loads(exported["JOB_METRICS"]) == training_events.JOB_METRICS
    assert json.loads(exported["JOB_STATUS_EVENTS"]) == [
        training_events.JOB_CREATED, training_events.JOB_QUEUED, training_events.JOB_RUNNING,
        training_events.JOB_SUCCEEDED, training_events.JOB_FAILED, training_events.JOB_CANCELLED,
        training_events.JOB_PAUSING, training_events.JOB_PAUSED]
    assert json.loads(exported["DEPLOYMENT_EVENTS"]) == [
        inference_events.DEPLOYMENT_CREATING, inference_events.DEPLOYMENT_IN_SERVICE,
        inference_events.DEPLOYMENT_FAILED, inference_events.DEPLOYMENT_DELETING, inference_events.DEPLOYMENT_DELETED]
    static = Path(browser_events.__file__).parent / "static"
    for script in static.glob("*.js"):  # no event name spelled out in the web app itself
        for name in (*files_events.__dict__.values(), *training_events.__dict__.values(),
                     *inference_events.__dict__.values()):
            if isinstance(name, str) and name.count(".") >= 1 and name.startswith(("file.", "training.",
                                                                                   "inference.")):
                assert f'"{name}"' not in script.read_text(), f"{script.name} spells out {name}"
