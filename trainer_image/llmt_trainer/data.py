"""The training data: the JSONL files of a channel read into examples (chat conversations or plain text for
supervised training, preference pairs for DPO), each line checked, and the validation share held out of the train
examples."""

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
    tools: list[dict[str, Any]] | None = None  # the record's `tools`, given to the chat template


@dataclass(frozen=True)
class TextDocument:
    """Plain text for continued pre-training: every token is a target."""

    text: str
    source: str


@dataclass(frozen=True)
class PreferencePair:
    """A DPO example: the prompt's messages (ending with a user or tool turn) and two replies to it."""

    messages: list[dict[str, Any]]
    chosen: dict[str, Any]
    rejected: dict[str, Any]
    source: str
    tools: list[dict[str, Any]] | None = None


Example = Conversation | TextDocument | PreferencePair
PREFERENCE_NEEDS_DPO = "preference data needs method dpo (hyperparameter method=dpo)"
DPO_NEEDS_PAIRS = 'DPO needs preference pairs ({"type": "preference", ...}), not chat or text examples'


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


def _text(content: Any) -> str | None:
    """Message content as text: a string, or OpenAI's list of text parts joined; None when it is neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str) for part in content
    ):
        return "".join(part["text"] for part in content)
    return None


def _tool_calls_problem(calls: Any) -> str | None:
    if not isinstance(calls, list) or not calls:
        return "tool_calls must be a non-empty list"
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            return "each tool call must be an object with a function that has a name"
        if not isinstance(function.get("arguments", {}), str | dict):
            return "a tool call's function arguments must be a JSON string or an object"
    return None


def _message(message: Any) -> dict[str, Any] | str:
    """The message as the chat template gets it (text parts joined, a legacy function_call as a tool call), or
    what is wrong with it. An assistant message that calls tools may have null or no content, as OpenAI's
    format allows; every other message needs text."""
    if not isinstance(message, dict):
        return "a message is not a JSON object"
    role = message.get("role")
    if role not in ROLES:
        return f"role must be one of {', '.join(sorted(ROLES))}, got {role!r}"
    out = dict(message)
    if role == "assistant" and message.get("function_call") is not None and message.get("tool_calls") is None:
        out["tool_calls"] = [{"type": "function", "function": out.pop("function_call")}]
    if out.get("tool_calls") is not None:
        if role != "assistant":
            return f"tool_calls is only allowed on assistant messages, found on a {role} message"
        problem = _tool_calls_problem(out["tool_calls"])
        if problem:
            return problem
    if out.get("content") is None and out.get("tool_calls"):
        out.pop("content", None)  # as OpenAI's format allows; templates test for a missing content
    else:
        content = _text(out.get("content"))
        if content is None:
            return f"{role} message content must be a string"
        out["content"] = content
    for key in ("name", "tool_call_id"):
        if key in out and not isinstance(out[key], str):
            return f"{key} must be a string"
    if "weight" in out:
        weight = out["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            return f"weight must be 0 or 1, got {weight!r}"
        if role != "assistant":
            return f"weight is only allowed on assistant messages, found on a {role} message"
    return out


def _conversation(record: Any, source: str) -> Conversation | str:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        return 'each line must be an object with a non-empty "messages" list'
    messages = []
    for message in record["messages"]:
        checked = _message(message)
        if isinstance(checked, str):
            return checked
        messages.append(checked)
    if messages[0]["role"] == "assistant":
        return "a conversation must not start with an assistant message"
    if not any(m["role"] == "assistant" and m.get("weight", 1) == 1 for m in messages):
        return "no assistant message to learn from (none, or all have weight 0)"
    tools = _tools(record)
    if isinstance(tools, str):
        return tools
    return Conversation(messages, source, tools)


def _tools(record: dict[str, Any]) -> list[dict[str, Any]] | str | None:
    tools = record.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        return "tools must be a list of objects"
    return tools or None


def _preference(record: dict[str, Any], source: str) -> PreferencePair | str:
    prompt = record.get("messages")
    if not isinstance(prompt, list) or not prompt:
        return 'a preference example needs a non-empty "messages" list (the prompt)'
    messages = []
    for message in prompt:
        checked = _message(message)
        if isinstance(checked, str):
            return checked
        messages.append(checked)
    if messages[-1]["role"] not in ("user", "tool"):
        return "a preference example's messages must end with a user (or tool) message"
    replies = []
    for key in ("chosen", "rejected"):
        reply = _message(record.get(key))
        if isinstance(reply, str) or reply["role"] != "assistant" or "weight" in reply:
            problem = reply if isinstance(reply, str) else "it must be an assistant message without weight"
            return f"{key}: {problem}"
        replies.append(reply)
    tools = _tools(record)
    if isinstance(tools, str):
        return tools
    return PreferencePair(messages, replies[0], replies[1], source, tools)


def _example(record: Any, source: str, method: str = "supervised") -> Example | str:
    """The example a line holds, or what is wrong with it (for this training method)."""
    kind = record.get("type", "chat") if isinstance(record, dict) else None
    if method == "dpo":
        return _preference(record, source) if kind == "preference" else DPO_NEEDS_PAIRS
    if kind == "text":
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            return "text must be a non-empty string"
        return TextDocument(text, source)
    if kind == "preference":
        return PREFERENCE_NEEDS_DPO
    if kind not in ("chat", None):
        return f"unknown example type {str(kind)[:40]!r}; expected chat, text or preference"
    return _conversation(record, source)


def load_conversations(channel: Path, channel_name: str, method: str = "supervised") -> list[Example]:
    """Every example of the channel, or a DataError naming the first problems by file and line. With method
    "dpo" every line must be a preference pair; otherwise a chat or text example."""
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
            example = _example(record, source, method)
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
