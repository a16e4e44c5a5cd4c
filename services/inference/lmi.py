"""The wire format to the serving container: LMI's Chat Completions schema (AWS's large-model-inference
container; docs.djl.ai, lmi/user_guides/chat_input_output_schema), which the local emulator's server speaks too.

LMI answers OpenAI's chat.completion shape with its own finish reasons ("eos_token", "stop_sequence", "length")
and streams chat.completion.chunk objects as JSON lines (application/jsonlines), not Server-Sent Events. This
module turns a request into LMI's body, and LMI's answers into exactly what OpenAI's API sends."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from services.inference.models import ChatRequest, Message

FINISH_REASONS = {"length": "length", "eos_token": "stop", "stop_sequence": "stop", "stop": "stop",
                  "tool_calls": "tool_calls", "content_filter": "content_filter"}


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def finish_reason(value: Any) -> str | None:
    if value is None:
        return None
    return FINISH_REASONS.get(str(value), "stop")


def wire_message(message: Message) -> dict[str, Any]:
    """OpenAI's newer `developer` role is the chat templates' `system`; content parts become their text."""
    wire: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                            "content": message.text()}
    if message.tool_calls:
        wire["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    if message.name:
        wire["name"] = message.name
    return wire


def request_body(request: ChatRequest, max_tokens: int | None, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [wire_message(m) for m in request.messages], "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    for name in ("temperature", "top_p", "seed"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.stop is not None:
        body["stop"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if stream:
        body["stream_options"] = {"include_usage": True}  # counted on every stream; passed on only when asked
    return body


def usage(raw: Any) -> dict[str, int]:
    raw = raw if isinstance(raw, dict) else {}
    prompt, completion = int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(raw: dict[str, Any], model: str) -> dict[str, Any]:
    """LMI's non-streaming answer as OpenAI's chat.completion object."""
    choices = []
    for i, choice in enumerate(raw.get("choices") or []):
        message = choice.get("message") or {}
        choices.append({"index": choice.get("index", i), "logprobs": None,
                        "finish_reason": finish_reason(choice.get("finish_reason")) or "stop",
                        "message": {"role": "assistant", "content": message.get("content") or "",
                                    "refusal": None, "annotations": []}})
    if not choices:
        raise ValueError("the model server answered no choices")
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(raw.get("usage")), "system_fingerprint": None,
            "service_tier": "default"}


async def json_lines(parts: AsyncIterator[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The objects of a JSON-lines byte stream, however its bytes were cut into parts."""
    pending = b""
    async for part in parts:
        pending += part
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
    if pending.strip():
        yield json.loads(pending)


async def chunks(objects: AsyncIterator[dict[str, Any]], model: str,
                 include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """LMI's streamed objects as OpenAI's chat.completion.chunk objects: one id, the role in the first delta,
    OpenAI's finish reasons, and (asked for with stream_options.include_usage) the usage chunk last."""
    chunk_id, created = completion_id(), int(time.time())
    first, counted, final_usage = True, 0, None
    async for raw in objects:
        if raw.get("usage") is not None:
            final_usage = usage(raw["usage"])
        for i, choice in enumerate(raw.get("choices") or []):
            delta = choice.get("delta") or {}
            out_delta: dict[str, Any] = {"content": delta.get("content") or ""}
            if first:
                out_delta["role"] = "assistant"
                first = False
            if out_delta["content"]:
                counted += 1
            yield {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": None, "choices": [{
                       "index": choice.get("index", i), "delta": out_delta, "logprobs": None,
                       "finish_reason": finish_reason(choice.get("finish_reason"))}]}
    if include_usage:
        # A server that sends no usage (LMI may not): the completion's chunks are its tokens, one each.
        yield {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
               "system_fingerprint": None, "choices": [],
               "usage": final_usage or {"prompt_tokens": 0, "completion_tokens": counted,
                                        "total_tokens": counted}}
