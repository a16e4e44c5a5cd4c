"""The local LMI stand-in (deploy/local/generation_server) in-process on the tiny demo model, and the
emulator's event stream encoder against botocore's own decoder.

Requests go through Starlette's TestClient, or a real port where the test needs concurrency or a client
that goes away. Where a request must be "in the middle" (running, or holding its place in the queue), the
engine holds it at a known point (after its first piece) instead of hoping the machine is slow enough.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.eventstream import EventStream, EventStreamError
from botocore.parsers import EventStreamJSONParser
from starlette.testclient import TestClient

from deploy.local.generation_server.app import create_app
from deploy.local.generation_server.engine import Engine, Piece, Prepared, configure_torch_threads
from deploy.local.generation_server.protocol import ADAPTER_HEADER, ADAPTERS_PATH
from deploy.local.sagemaker_emulator.eventstream import exception_event, payload_parts
from tests.support.polling import wait_for
from tests.support.servers import serve
from tests.support.serving import CHAT, chat_request, content, json_lines, lora_adapter, streamed_text
from trainer_image.demo_model import build_demo_model

CONTEXT = 512  # the demo model's max_position_embeddings


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configure_torch_threads(1)
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture(scope="module")
def client(demo_model: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Engine.load(str(demo_model)))) as test_client:
        yield test_client


def ask(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.post("/invocations", json=chat_request(**params))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return dict(response.json())


def ask_streamed(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.post("/invocations", json=chat_request(stream=True, **params))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jsonlines"
    return json_lines(response.content)


# --- the chat completions schema -------------------------------------------------------------------------

def test_a_plain_answer_has_lmis_shape(client: TestClient) -> None:
    answer = ask(client, max_tokens=12)
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert isinstance(answer["created"], int)
    [choice] = answer["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    usage = answer["usage"]
    assert usage["completion_tokens"] == 12 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12


def test_greedy_answers_repeat_and_the_stream_equals_the_plain_answer(client: TestClient) -> None:
    plain = ask(client, max_tokens=40)
    assert content(ask(client, max_tokens=40)) == content(plain)
    chunks = ask_streamed(client, max_tokens=40, stream_options={"include_usage": True})
    assert streamed_text(chunks) == content(plain)
    assert len(chunks) > 3, "the answer arrives in pieces, not all at once"


def test_the_stream_is_json_lines_of_chunks_ending_with_the_usage(client: TestClient) -> None:
    chunks = ask_streamed(client, max_tokens=10, stream_options={"include_usage": True})
    *pieces, last_piece, usage_line = chunks
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    first = (pieces or [last_piece])[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["finish_reason"] is None
    assert all(c["choices"][0]["finish_reason"] is None and "role" not in c["choices"][0]["delta"]
               for c in pieces[1:])
    assert last_piece["choices"][0]["finish_reason"] == "length" and last_piece["choices"][0]["logprobs"] is None
    assert usage_line["choices"] == [] and usage_line["usage"]["completion_tokens"] == 10
    without_usage = ask_streamed(client, max_tokens=10)
    assert all(c["choices"] for c in without_usage) and "usage" not in without_usage[-1]


def test_a_conversation_with_a_tool_call_reaches_the_template(client: TestClient) -> None:
    """An assistant turn that only calls a tool (content null) and the tool's reply are rendered, not refused."""
    messages = [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    response = client.post("/invocations", json={"messages": messages, "max_tokens": 2, "temperature": 0})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] > 0


def test_the_same_seed_samples_the_same_text(client: TestClient) -> None:
    sampled = {seed: content(ask(client, temperature=1.0, top_p=0.9, seed=seed, max_tokens=30)) for seed in (1, 2)}
    assert content(ask(client, temperature=1.0, top_p=0.9, seed=1, max_tokens=30)) == sampled[1]
    assert sampled[1] != sampled[2]
    assert streamed_text(ask_streamed(client, temperature=1.0, top_p=0.9, seed=1, max_tokens=30)) == sampled[1]


def test_a_stop_string_ends_the_answer_before_it(client: TestClient) -> None:
    text = content(ask(client, max_tokens=60))
    stop = text[len(text) // 2: len(text) // 2 + 3]
    expected = text[:text.index(stop)]
    answer = ask(client, max_tokens=60, stop=[stop, "never appears in this answer"])
    assert content(answer) == expected and answer["choices"][0]["finish_reason"] == "stop_sequence"
    chunks = ask_streamed(client, max_tokens=60, stop=stop)
    assert streamed_text(chunks) == expected and chunks[-1]["choices"][0]["finish_reason"] == "stop_sequence"


def test_without_max_tokens_the_answer_may_fill_the_context(client: TestClient) -> None:
    answer = ask(client)
    assert answer["choices"][0]["finish_reason"] in ("eos_token", "length")
    assert answer["usage"]["total_tokens"] <= CONTEXT


def test_the_loss_of_the_final_assistant_message_is_a_local_extension(client: TestClient) -> None:
    messages = [*CHAT, {"role": "assistant", "content": "The glimp is red."}]
    response = client.post("/invocations", json={"messages": messages, "llmt_score": True})
    assert response.status_code == 200, response.text
    score = response.json()
    assert score["object"] == "llmt.score" and math.isfinite(score["loss"]) and score["loss"] > 0
    assert score["tokens"] >= 2  # the answer's tokens and its end-of-turn token


# --- requests refused ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    ({"messages": []}, "'messages' must be a non-empty list"),
    ({}, "'messages' is required"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role must be one of"),
    ({"messages": [{"role": "user", "content": 7}]}, "messages[0].content must be a string"),
    ({"messages": CHAT, "frequency_penalty": 1}, "Unknown parameter: 'frequency_penalty'"),
    ({"messages": CHAT, "temperature": 3}, "'temperature' must be a number from 0 to 2"),
    ({"messages": CHAT, "top_p": 0}, "'top_p' must be a number greater than 0"),
    ({"messages": CHAT, "max_tokens": 0}, "'max_tokens' must be an integer of at least 1"),
    ({"messages": CHAT, "n": 2}, "'n' must be 1"),
    ({"messages": CHAT, "stop": [""]}, "'stop' must be a non-empty string"),
    ({"messages": CHAT, "stream_options": {"include_usage": True}}, "only allowed when 'stream' is true"),
    ({"messages": CHAT, "llmt_score": True}, "the last message must have role 'assistant'"),
])
def test_a_bad_request_is_a_400_that_says_why(client: TestClient, body: dict[str, Any], message: str) -> None:
    response = client.post("/invocations", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == 400 and message in response.json()["error"]


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    response = client.post("/invocations", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]


def test_a_prompt_beyond_the_context_is_a_400_with_vllms_words(client: TestClient) -> None:
    response = client.post("/invocations", json=chat_request(max_tokens=CONTEXT))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(f"This model's maximum context length is {CONTEXT} tokens. However, you requested ")
    assert f"in the messages, {CONTEXT} in the completion). Please reduce" in error
    huge = [{"role": "user", "content": "glimp " * 2000}]
    response = client.post("/invocations", json={"messages": huge})
    assert response.status_code == 400
    assert "However, your messages resulted in" in response.json()["error"]


# --- adapters ------------------------------------------------------------------------------------------

def test_a_request_runs_on_the_adapter_its_header_names(demo_model: Path, tmp_path: Path) -> None:
    adapter = lora_adapter(demo_model, tmp_path / "adapter")
    with TestClient(create_app(Engine.load(str(demo_model)))) as client:
        base = content(ask(client, max_tokens=20))
        loaded = client.post(ADAPTERS_PATH, json={"name": "ft-1", "path": str(adapter)})
        assert loaded.status_code == 200 and client.get(ADAPTERS_PATH).json() == {"adapters": ["ft-1"]}
        tuned = client.post("/invocations", json=chat_request(max_tokens=20), headers={ADAPTER_HEADER: "ft-1"})
        assert tuned.status_code == 200 and content(tuned.json()) != base
        assert content(ask(client, max_tokens=20)) == base, "no header: the base model, untouched"
        unknown = client.post("/invocations", json=chat_request(), headers={ADAPTER_HEADER: "ft-2"})
        assert unknown.status_code == 404 and "ft-2" in unknown.json()["error"]
        assert client.delete(f"{ADAPTERS_PATH}/ft-1").status_code == 200
        gone = client.post("/invocations", json=chat_request(), headers={ADAPTER_HEADER: "ft-1"})
        assert gone.status_code == 404
        assert content(ask(client, max_tokens=20)) == base


def test_loading_what_is_not_an_adapter_is_refused(client: TestClient, tmp_path: Path) -> None:
    response = client.post(ADAPTERS_PATH, json={"name": "x", "path": str(tmp_path)})
    assert response.status_code == 400 and "adapter_config.json" in response.json()["error"]


# --- the queue -----------------------------------------------------------------------------------------

class HeldEngine(Engine):
    """Holds each generation after its first piece until released, or until the request is cancelled."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.holding, self.release, self.cancel_seen = threading.Event(), threading.Event(), threading.Event()

    def generate(self, prepared: Prepared, cancelled: Callable[[], bool]) -> Iterator[Piece]:
        for i, piece in enumerate(super().generate(prepared, cancelled)):
            yield piece
            if i == 0:
                self.holding.set()
                while not self.release.wait(0.01):
                    if cancelled():
                        self.cancel_seen.set()
                        return


def test_beyond_the_queue_bound_a_request_is_a_503_and_the_queued_ones_are_served(demo_model: Path) -> None:
    engine = HeldEngine.load(str(demo_model))
    assert isinstance(engine, HeldEngine)
    app = create_app(engine, max_waiting=1)
    with serve(app) as url, ThreadPoolExecutor(2) as pool:
        def post() -> httpx.Response:
            return httpx.post(f"{url}/invocations", json=chat_request(max_tokens=5), timeout=60)

        running = pool.submit(post)
        wait_for(engine.holding.is_set, bool, "the first request to be generating")
        waiting = pool.submit(post)
        wait_for(lambda: app.state.scheduler.admitted, lambda n: n == 2, "the second request to be queued")
        refused = post()
        assert refused.status_code == 503
        assert refused.json() == {"error": "The server is busy: 1 requests are already waiting for the model. "
                                           "Retry later.", "code": 503}
        engine.release.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert app.state.scheduler.admitted == 0


def test_a_client_that_leaves_mid_stream_frees_its_place(demo_model: Path) -> None:
    engine = HeldEngine.load(str(demo_model))
    assert isinstance(engine, HeldEngine)
    app = create_app(engine)
    with serve(app) as url:
        with httpx.stream("POST", f"{url}/invocations", json=chat_request(stream=True, max_tokens=50),
                          timeout=30) as response:
            first = json.loads(next(response.iter_lines()))
            assert first["choices"][0]["delta"]["role"] == "assistant"
        wait_for(engine.cancel_seen.is_set, bool, "the generation to see its client gone")
        wait_for(lambda: app.state.scheduler.admitted, lambda n: n == 0, "the place to be given back")


# --- AWS's event stream, read back by botocore -----------------------------------------------------------

class _Chunks:
    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size = data, size

    def stream(self) -> Iterator[bytes]:
        return (self._data[i:i + self._size] for i in range(0, len(self._data), self._size))

    def close(self) -> None:
        pass


def decoded(data: bytes, chunk_size: int) -> EventStream:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    shape = model.operation_model("InvokeEndpointWithResponseStream").output_shape.members["Body"]
    return EventStream(_Chunks(data, chunk_size), shape, EventStreamJSONParser(), "InvokeEndpointWithResponseStream")


@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 20])
def test_payload_parts_decode_as_botocore_reads_sagemakers_stream(chunk_size: int) -> None:
    parts = [b'{"a": 1}\n', "é unicode ✓\n".encode(), b"", b"x" * 70_000]
    events = list(decoded(b"".join(payload_parts(p) for p in parts), chunk_size))
    assert events == [{"PayloadPart": {"Bytes": p}} for p in parts]


def test_a_model_stream_error_is_raised_by_botocore_while_iterating() -> None:
    broken = exception_event("ModelStreamError", {"Message": "broke", "ErrorCode": "StreamBroken"})
    data = payload_parts(b"first\n") + broken
    events = iter(decoded(data, 5))
    assert next(events) == {"PayloadPart": {"Bytes": b"first\n"}}
    with pytest.raises(EventStreamError) as raised:
        next(events)
    assert raised.value.response["Error"] == {"Code": "ModelStreamError", "Message": "broke"}
