"""Chat completions' own logic (services/inference/chat.py, lmi.py) with fakes: what is refused and how, LMI's
answers turned into OpenAI's, and the container's errors turned into the caller's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from services.inference import chat, deployments, lmi
from services.inference.deps import Deps
from services.inference.models import ChatRequest, CreateDeployment
from shared.errors import Conflict, InvalidRequest
from tests.support.inference import FakeRuntime, FakeSageMaker, client_error, inference_deps

DEMO = "llm-tuner/tiny-chat"
HELLO = [{"role": "user", "content": "hi"}]


def request(**fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"model": DEMO, "messages": HELLO, **fields})


async def served(deps: Deps) -> None:
    deployment, _ = await deployments.create_deployment(CreateDeployment(model=DEMO), "u1", deps)
    for _ in range(4):
        await deployments.advance(deployment.deployment_id, deps)
        assert isinstance(deps.sagemaker, FakeSageMaker)
        deps.sagemaker.settle()


def runtime(deps: Deps) -> FakeRuntime:
    assert isinstance(deps.runtime, FakeRuntime)
    return deps.runtime


@pytest.mark.parametrize(("fields", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_what_cannot_be_honoured_is_refused_by_name(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        chat.check_request(request(**fields))
    assert refused.value.param == param


def test_neutral_values_and_either_token_limit_are_accepted() -> None:
    assert chat.check_request(request(n=1, frequency_penalty=0, logprobs=False, max_completion_tokens=7)) == 7
    assert chat.check_request(request(max_tokens=9)) == 9


@pytest.mark.parametrize("fields", [{"messages": []}, {"messages": [{"role": "robot", "content": "x"}]},
                                    {"messages": [{"role": "user"}]}, {"temperature": 3}, {"top_p": 0},
                                    {"unknown_parameter": 1}, {"stop": ["a", "b", "c", "d", "e"]}])
def test_malformed_requests_do_not_parse(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        request(**fields)


def test_lmi_answers_become_openai_completions() -> None:
    raw = {"id": "chatcmpl-0", "object": "chat.completion", "created": 1,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "logprobs": None,
                        "finish_reason": "eos_token"}], "usage": {"prompt_tokens": 7, "completion_tokens": 2,
                                                                  "total_tokens": 9}}
    answer = lmi.completion(raw, "ft:x")
    assert answer["model"] == "ft:x" and answer["object"] == "chat.completion"
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["choices"][0]["message"]["content"] == "Paris"
    assert answer["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert lmi.finish_reason("length") == "length" and lmi.finish_reason("stop_sequence") == "stop"


async def test_json_lines_survive_any_cut_of_the_bytes() -> None:
    objects = [{"choices": [{"delta": {"content": f"t{i}"}}]} for i in range(3)]
    data = b"".join(json.dumps(o).encode() + b"\n" for o in objects)

    async def parts(size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i:i + size]
    for size in (1, 7, len(data)):
        assert [o async for o in lmi.json_lines(parts(size))] == objects


async def test_a_model_without_a_deployment_is_a_409_that_says_how_to_deploy() -> None:
    deps = inference_deps()
    with pytest.raises(Conflict) as refused:
        await chat.chat(request(), "u1", deps, chat.Invoker(2))
    assert refused.value.code == "model_not_deployed" and "POST /api/deployments" in refused.value.message
    assert refused.value.headers == {"x-should-retry": "false"}


async def test_the_containers_refusals_are_the_callers_400s_and_its_failures_502s() -> None:
    deps = inference_deps()
    await served(deps)
    context = "This model's maximum context length is 256 tokens. However, you requested 300 tokens."
    runtime(deps).answers = [
        client_error("ModelError", "Received client error (400)", status=424, OriginalStatusCode=400,
                     OriginalMessage=json.dumps({"error": context, "code": 400})),
        client_error("ModelError", "Received server error (500)", status=424, OriginalStatusCode=500,
                     OriginalMessage="CUDA error")]
    with pytest.raises(InvalidRequest) as too_long:
        await chat.chat(request(), "u1", deps, chat.Invoker(2))
    assert too_long.value.code == "context_length_exceeded" and too_long.value.param == "messages"
    assert too_long.value.message == context
    with pytest.raises(chat.UpstreamError) as failed:
        await chat.chat(request(), "u1", deps, chat.Invoker(2))
    assert failed.value.status_code == 502 and "CUDA error" in failed.value.message


async def test_a_chat_invokes_the_models_component_in_lmis_schema() -> None:
    deps = inference_deps()
    await served(deps)
    runtime(deps).answers = [json.dumps({"choices": [{"message": {"content": "hello"}, "finish_reason": "length"}],
                                         "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode()]
    answer = await chat.chat(request(temperature=0, max_completion_tokens=1, stop="\n", seed=4), "u1", deps,
                             chat.Invoker(2))
    assert answer["choices"][0]["message"]["content"] == "hello" and answer["choices"][0]["finish_reason"] == "length"
    sent = runtime(deps).requests[0]
    assert sent["InferenceComponentName"].endswith("-base") and sent["EndpointName"].startswith("llmt-")
    assert json.loads(sent["Body"]) == {"messages": HELLO, "stream": False, "max_tokens": 1, "temperature": 0,
                                        "seed": 4, "stop": ["\n"]}


async def test_a_stream_is_server_sent_events_ending_with_done() -> None:
    deps = inference_deps()
    await served(deps)
    lines = [{"choices": [{"index": 0, "delta": {"content": "Pa"}, "finish_reason": None}]},
             {"choices": [{"index": 0, "delta": {"content": "ris"}, "finish_reason": "eos_token"}]},
             {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}]
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    runtime(deps).answers = [[data[:10], data[10:]]]
    events = await chat.chat_stream(request(stream=True, stream_options={"include_usage": True}), "u1", deps,
                                    chat.Invoker(2))
    sent = [e async for e in events]
    assert sent[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix("data: ")) for e in sent[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]) == "Paris"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5
    assert len({c["id"] for c in chunks}) == 1
