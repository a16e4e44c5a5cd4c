"""Line-by-line validation of chat JSONL, fed as the object streams from S3 (memory stays bounded)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

ROLES = {"system", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "function_call"}
MAX_LISTED_ERRORS = 100


@dataclass
class LineError:
    line: int
    code: str
    message: str


@dataclass
class ChatValidator:
    examples: int = 0
    errors: list[LineError] = field(default_factory=list)
    error_counts: Counter[str] = field(default_factory=Counter)

    def _error(self, line: int, code: str, message: str) -> None:
        self.error_counts[code] += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(LineError(line, code, message))

    def feed(self, line_no: int, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error(line_no, "invalid_utf8", f"Line {line_no} is not valid UTF-8.")
            return
        try:
            example = json.loads(text)
        except json.JSONDecodeError as exc:
            self._error(line_no, "invalid_json", f"Line {line_no} is not valid JSON: {exc.msg}.")
            return
        problem = _chat_problem(example)
        if problem:
            self._error(line_no, *problem)
        else:
            self.examples += 1

    def too_long(self, line_no: int, limit: int) -> None:
        self._error(line_no, "line_too_long", f"Line {line_no} is longer than {limit} bytes.")

    @property
    def ok(self) -> bool:
        return not self.error_counts and self.examples > 0

    def summary(self) -> str | None:
        if self.ok:
            return None
        if not self.error_counts:
            return "The file has no training examples."
        first = self.errors[0]
        total = sum(self.error_counts.values())
        more = f" ({total - 1} more error(s))" if total > 1 else ""
        return f"Invalid file format. {first.message}{more}"


def _chat_problem(example: Any) -> tuple[str, str] | None:
    if not isinstance(example, dict):
        return "not_an_object", "Each line must be a JSON object."
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return "missing_messages", "Each example needs a non-empty 'messages' list."
    saw_assistant = False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return "wrong_type", f"messages[{i}] must be an object."
        role = message.get("role")
        if role not in ROLES:
            return "unknown_role", f"messages[{i}] has unknown role {role!r}."
        unknown = set(message) - MESSAGE_KEYS
        if unknown:
            return "unknown_key", f"messages[{i}] has unknown key(s): {', '.join(sorted(unknown))}."
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            if not (role == "assistant" and message.get("tool_calls")):
                return "empty_content", f"messages[{i}] has no text content."
        saw_assistant |= role == "assistant"
    if not saw_assistant:
        return "missing_assistant", "Each example needs at least one assistant message."
    return None


async def lines(chunks: AsyncIterator[bytes], max_line_bytes: int) -> AsyncIterator[tuple[int, bytes | None]]:
    """Split a byte stream into numbered lines; a line over the limit is yielded as None, never held."""
    buffer = bytearray()
    line_no, skipping = 1, False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not skipping:
                    buffer += chunk[start:]
                    if len(buffer) > max_line_bytes:
                        buffer.clear()
                        skipping = True
                break
            if not skipping:
                buffer += chunk[start:end]
            yield line_no, (None if skipping or len(buffer) > max_line_bytes else bytes(buffer))
            buffer.clear()
            skipping = False
            line_no += 1
            start = end + 1
    if buffer or skipping:
        yield line_no, None if skipping else bytes(buffer)
