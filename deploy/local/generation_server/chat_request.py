"""The request body LMI's chat completions schema takes, checked field by field into a `ChatRequest`.

Anything the schema does not name is refused (a 400 naming the field), so a caller learns at once that a
parameter is not honoured instead of getting an answer that silently ignored it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
KNOWN_FIELDS = frozenset({"messages", "model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream",
                          "stream_options", "n", "llmt_score"})
MAX_STOP_SEQUENCES = 16
MAX_TEMPERATURE = 2.0
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


class InvalidRequest(Exception):
    """A request the server refuses: HTTP 400 with LMI's `{"error": message, "code": 400}`."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int | None = None  # None: until the context is full, capped by the server
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    score: bool = False  # the local `llmt_score` extension: the loss of the final assistant message


def parse_chat_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: {unknown[0]!r}. This server takes "
                             f"{', '.join(sorted(KNOWN_FIELDS))}.")
    if "messages" not in body:
        raise InvalidRequest("'messages' is required: a chat completions request lists the conversation.")
    messages = _messages(body["messages"])
    score = _boolean(body, "llmt_score", False)
    stream = _boolean(body, "stream", False)
    n = body.get("n", 1)
    if n is not None and (_is_bool(n) or n != 1):
        raise InvalidRequest(f"'n' must be 1 (one choice per request), not {n!r}.")
    if score:
        return _score_request(body, messages, stream)
    include_usage = False
    if body.get("stream_options") is not None:
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.")
        options = body["stream_options"]
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise InvalidRequest("'stream_options' must be an object with only 'include_usage'.")
        include_usage = _boolean(options, "include_usage", False, where="stream_options.include_usage")
    return ChatRequest(
        messages=messages, max_tokens=_max_tokens(body.get("max_tokens")),
        temperature=_number(body, "temperature", 1.0, 0.0, MAX_TEMPERATURE),
        top_p=_top_p(body.get("top_p")), stop=_stop(body.get("stop")), seed=_seed(body.get("seed")),
        stream=stream, include_usage=include_usage)


def _score_request(body: dict[str, Any], messages: list[dict[str, str]], stream: bool) -> ChatRequest:
    if stream:
        raise InvalidRequest("'llmt_score' cannot be streamed; send it with 'stream': false.")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
        raise InvalidRequest("'llmt_score' scores the final assistant message: the last message must have "
                             "role 'assistant' and a non-empty content.")
    if len(messages) < 2:
        raise InvalidRequest("'llmt_score' needs at least one message before the assistant message it scores.")
    generation_fields = sorted(set(body) & {"max_tokens", "temperature", "top_p", "stop", "seed",
                                            "stream_options"})
    if generation_fields:
        raise InvalidRequest(f"'llmt_score' generates nothing; {generation_fields[0]!r} does not apply.")
    return ChatRequest(messages=messages, score=True)


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'messages' must be a non-empty list of {role, content} objects.")
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        at = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{at} must be an object with 'role' and 'content'.")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{at}.role must be one of {', '.join(ROLES)}, not {role!r}.")
        if role == "assistant" and message.get("content") is None and isinstance(message.get("tool_calls"), list):
            rendered: dict[str, Any] = {"role": role, "content": ""}
        else:
            rendered = {"role": role, "content": _content(message.get("content"), f"{at}.content")}
        # What chat templates render besides the text: an assistant's tool calls, a tool reply's call id, names.
        for key in ("tool_calls", "tool_call_id", "name"):
            if message.get(key) is not None:
                rendered[key] = message[key]
        messages.append(rendered)
    return messages


def _content(value: Any, at: str) -> str:
    """A string, or OpenAI's list of text parts (joined): what a chat template can render."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{at}[{j}] must be a text part {{'type': 'text', 'text': str}}; "
                                     "this server serves text-only models.")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidRequest(f"{at} must be a string (or a list of text parts), not {type(value).__name__}.")


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _boolean(body: dict[str, Any], key: str, default: bool, where: str | None = None) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not _is_bool(value):
        raise InvalidRequest(f"'{where or key}' must be true or false, not {value!r}.")
    return bool(value)


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if _is_bool(value) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"'{key}' must be a number from {low:g} to {high:g}, not {value!r}.")
    return float(value)


def _top_p(value: Any) -> float:
    if value is None:
        return 1.0
    if _is_bool(value) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise InvalidRequest(f"'top_p' must be a number greater than 0 and at most 1, not {value!r}.")
    return float(value)


def _max_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'max_tokens' must be an integer of at least 1, not {value!r}.")
    return value


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or len(stops) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stops)):
        raise InvalidRequest(f"'stop' must be a non-empty string or a list of at most {MAX_STOP_SEQUENCES} "
                             "non-empty strings.")
    return tuple(stops)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, int) or not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise InvalidRequest(f"'seed' must be an integer, not {value!r}.")
    return value
