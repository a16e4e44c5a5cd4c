"""The answers, shaped as LMI's chat completions schema shapes them: one `chat.completion`, or JSON lines of
`chat.completion.chunk` (the first delta carries the role; with `stream_options.include_usage` a last line
with empty choices carries the usage), and errors as `{"error": message, "code": status}`."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


def error_body(message: str, status: int) -> dict[str, Any]:
    return {"error": message, "code": status}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class Completion:
    """One answer's identity and its counters, building either shape."""

    prompt_tokens: int
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    completion_tokens: int = 0
    _role_sent: bool = False

    def message(self, content: str, finish_reason: str | None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage(self.prompt_tokens, self.completion_tokens)}

    def chunk_line(self, content: str, finish_reason: str | None) -> bytes:
        delta: dict[str, str] = {"content": content}
        if not self._role_sent:
            delta["role"] = "assistant"
            self._role_sent = True
        return _line({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                      "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]})

    def usage_line(self) -> bytes:
        return _line({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "choices": [],
                      "usage": usage(self.prompt_tokens, self.completion_tokens)})


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
