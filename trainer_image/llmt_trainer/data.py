"""The training data: the JSONL files of a channel read into examples (chat conversations or plain text), each
line checked, and the validation share held out of the train examples."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

ROLES = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, Any]]
    source: str  # "file.jsonl:line", for error messages


@dataclass(frozen=True)
class TextDocument:
    """Plain text for continued pre-training: every token is a target."""

    text: str
    source: str


Example = Conversation | TextDocument
PREFERENCE_UNSUPPORTED = "preference data needs DPO, not supported by this trainer yet"


def _jsonl_files(channel: Path, channel_name: str) -> list[Path]:
    if not channel.is_dir():
        raise DataError(f"{channel_name} channel {channel} does not exist or is not a directory")
    # A channel holds whatever objects lie under its S3 prefix, named or not (the platform keys uploads by
    # id, with no extension), so every regular file counts; hidden ones (".part", ".DS_Store") do not.
    files = sorted((p for p in channel.rglob("*") if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: p.relative_to(channel))
    if not files:
        raise DataError(f"{channel_name} channel {channel} holds no data file")
    return files


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "a message is not a JSON object"
    role = message.get("role")
    if role not in ROLES:
        return f"role must be one of {', '.join(sorted(ROLES))}, got {role!r}"
    if not isinstance(message.get("content"), str):
        return f"{role} message content must be a string"
    if "weight" in message:
        weight = message["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            return f"weight must be 0 or 1, got {weight!r}"
        if role != "assistant":
            return f"weight is only allowed on assistant messages, found on a {role} message"
    return None


def _conversation_problem(record: Any) -> str | None:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        return 'each line must be an object with a non-empty "messages" list'
    messages = record["messages"]
    for message in messages:
        problem = _message_problem(message)
        if problem:
            return problem
    if messages[0]["role"] == "assistant":
        return "a conversation must not start with an assistant message"
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
        return "no assistant message to learn from (none, or all have weight 0)"
    return None


def _example(record: Any, source: str) -> Example | str:
    """The example a line holds, or what is wrong with it."""
    kind = record.get("type", "chat") if isinstance(record, dict) else None
    if kind == "text":
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            return "text must be a non-empty string"
        return TextDocument(text, source)
    if kind == "preference":
        raise DataError(f"{source}: {PREFERENCE_UNSUPPORTED}")
    if kind not in ("chat", None):
        return f"unknown example type {str(kind)[:40]!r}; expected chat or text"
    problem = _conversation_problem(record)
    return problem if problem else Conversation(record["messages"], source)


def load_conversations(channel: Path, channel_name: str) -> list[Example]:
    """Every example of the channel, or a DataError naming the first problems by file and line."""
    conversations: list[Example] = []
    problems: list[str] = []
    for path in _jsonl_files(channel, channel_name):
        try:
            # Lines end at "\n" only: splitlines() would also cut at U+2028 or U+0085, which JSON strings
            # may hold as they are.
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{source}: invalid JSON ({exc.msg})")
                continue
            example = _example(record, source)
            if isinstance(example, str):
                problems.append(f"{source}: {example}")
            else:
                conversations.append(example)
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"invalid {channel_name} data, {len(problems)} bad line(s): {shown}{more}")
    if not conversations:
        raise DataError(f"{channel_name} channel {channel} holds no examples (all files are empty)")
    return conversations



def split_validation(examples: Sequence[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): floor(share x n) examples picked by the seed, both keeping the file's order."""
    held = math.floor(len(examples) * share)
    if held <= 0:
        return list(examples), []
    picked = set(random.Random(seed).sample(range(len(examples)), held))  # noqa: S311 - sampling, not security
    return ([e for i, e in enumerate(examples) if i not in picked],
            [e for i, e in enumerate(examples) if i in picked])
