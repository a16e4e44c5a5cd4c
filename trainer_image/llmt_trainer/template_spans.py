"""Where each assistant reply lies in a conversation rendered by a chat template that has no {% generation %}
markers: the character span of the reply and of the marker that ends its turn (the tokens the model must learn
to produce, and to stop after).

Two ways, tried in this order for each conversation:
- prefix rendering: rendering messages[:i] with the generation prompt and messages[:i+1]; the difference is
  assistant turn i. It needs a template whose rendering of earlier turns does not change as the conversation
  grows, which Mistral's (the system prompt goes with the last user turn) and Phi-3.5's (EOS after the last
  turn) are not.
- reply substitution: rendering the whole conversation again with only reply i replaced by a sentinel; what
  differs from the real rendering is that reply, content or tool calls alike. The turn's end marker is then
  added, as learned once per template from two probe conversations (`learn_markers`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DataError

Span = tuple[int, int]
# Two sentinels that share no first and no last character, so that a reply cannot coincide with both at either
# end (the common prefix or suffix of two renderings would otherwise reach into the reply).
SENTINELS = ("#sentinel-a#", "%sentinel-b%")
PROBE_USER = ("Probe question?", "Another probe question?")
PROBE_CALL_ID = "A1b2C3d4E"  # nine alphanumerics: Mistral's template refuses any other tool call id


@dataclass(frozen=True)
class TemplateMarkers:
    """What a template writes around a reply, learned from probe conversations."""

    turn_end: str  # after an assistant reply, e.g. "<|im_end|>", "<|eot_id|>", "</s>"; "" when none was found
    tool_call_start: str | None  # what opens a tool-call reply, e.g. '[TOOL_CALLS] [{"name": "'; None if unknown


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
           *, add_generation_prompt: bool = False) -> str:
    text: str = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return text


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: str, b: str, limit: int) -> int:
    i = 0
    while i < limit and a[-1 - i] == b[-1 - i]:
        i += 1
    return i


def _common_tokens(tokenizer: Any, a: str, b: str) -> str:
    """The longest start of `a` made of whole tokens that `b` starts with too."""
    first = tokenizer(a, add_special_tokens=False, return_offsets_mapping=True)
    second = tokenizer(b, add_special_tokens=False)["input_ids"]
    end = 0
    for token, other, (_, token_end) in zip(first["input_ids"], second, first["offset_mapping"], strict=False):
        if token != other:
            break
        end = token_end
    return a[:end]


def _reply(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def _sentinel_call(name: str) -> dict[str, Any]:
    return {"id": PROBE_CALL_ID, "type": "function", "function": {"name": name, "arguments": {}}}


def _turn_end(tokenizer: Any) -> str:
    """What follows a reply both when it ends the conversation and when a user turn comes next."""
    for opening in ([], [{"role": "system", "content": "Probe system prompt."}]):
        user = [*opening, {"role": "user", "content": PROBE_USER[0]}]
        try:
            last = render(tokenizer, [*user, _reply(SENTINELS[0])], None)
            followed = render(tokenizer, [*user, _reply(SENTINELS[0]), {"role": "user", "content": PROBE_USER[1]}],
                              None)
        except Exception:  # noqa: S112 - a template may refuse one probe layout; the next one is tried
            continue
        at = last.rfind(SENTINELS[0]) + len(SENTINELS[0])
        if at >= len(SENTINELS[0]) and followed[:at] == last[:at]:
            return _common_tokens(tokenizer, last[at:], followed[at:]).rstrip()
    return ""


def _tool_call_start(tokenizer: Any) -> str | None:
    """The text between the end of the prompt and the first function name, in a reply that calls a tool."""
    user = [{"role": "user", "content": PROBE_USER[0]}]
    try:
        calling = render(tokenizer, [*user, {"role": "assistant", "content": "",
                                             "tool_calls": [_sentinel_call(SENTINELS[0])]}], None)
        replying = render(tokenizer, [*user, _reply(SENTINELS[1])], None)
    except Exception:
        return None
    name_at = calling.find(SENTINELS[0])
    start = _common_prefix(calling, replying)
    return calling[start:name_at] if 0 <= start <= name_at else None


def learn_markers(tokenizer: Any) -> TemplateMarkers:
    return TemplateMarkers(_turn_end(tokenizer), _tool_call_start(tokenizer))


def _through_turn_end(text: str, start: int, end: int, turn_end: str) -> Span:
    """The span cut after the last end-of-turn marker inside it (dropping what a template writes after a turn,
    such as the newline after Qwen's <|im_end|> or the EOS Phi-3.5 adds after the last turn)."""
    at = text.rfind(turn_end, start, end) if turn_end else -1
    if at >= 0:
        return start, at + len(turn_end)
    return start, start + len(text[start:end].rstrip())


def prefix_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, text: str,
                 indices: Sequence[int], markers: TemplateMarkers) -> list[Span]:
    spans = []
    for i in indices:
        before = render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1], tools)
        if not through.startswith(before) or not text.startswith(through):
            raise DataError("the chat template renders earlier turns differently as the conversation grows")
        spans.append(_through_turn_end(text, len(before), len(through), markers.turn_end))
    return spans


def _replaced(messages: list[dict[str, Any]], i: int, sentinel: str, *, keep_tool_calls: bool) -> list[dict[str, Any]]:
    """The conversation with reply i replaced: by a plain reply, or (for a template that would refuse that, such
    as Mistral's, which checks the turn order) by tool calls of the same shape with sentinel names."""
    replacement = _reply(sentinel)
    if keep_tool_calls:
        replacement = copy.deepcopy(messages[i])
        for call in replacement["tool_calls"]:
            call["function"] = {"name": sentinel, "arguments": {}}
    return [*messages[:i], replacement, *messages[i + 1:]]


def _differing(text: str, others: Sequence[str]) -> Span:
    """The smallest span of `text` outside which it equals each of `others`, merged over all of them."""
    starts, ends = [], []
    for other in others:
        start = _common_prefix(text, other)
        suffix = _common_suffix(text, other, min(len(text), len(other)) - start)
        starts.append(start)
        ends.append(len(text) - suffix)
    return min(starts), max(ends)


def _substituted_span(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                      text: str, i: int, markers: TemplateMarkers) -> Span:
    try:
        others = [render(tokenizer, _replaced(messages, i, s, keep_tool_calls=False), tools) for s in SENTINELS]
    except Exception:
        if not messages[i].get("tool_calls") or markers.tool_call_start is None or not markers.turn_end:
            raise
        others = [render(tokenizer, _replaced(messages, i, s, keep_tool_calls=True), tools) for s in SENTINELS]
        name_at = _differing(text, others)[0]
        start = name_at - len(markers.tool_call_start)
        end = text.find(markers.turn_end, name_at)
        if start < 0 or text[start:name_at] != markers.tool_call_start or end < 0:
            raise DataError(f"cannot find the tool calls of message {i + 1} in its rendering") from None
        return start, end + len(markers.turn_end)
    start, end = _differing(text, others)
    if markers.turn_end and text.startswith(markers.turn_end, end):
        end += len(markers.turn_end)
    return start, end


def substitution_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                       text: str, indices: Sequence[int], markers: TemplateMarkers) -> list[Span]:
    return [_substituted_span(tokenizer, messages, tools, text, i, markers) for i in indices]


def check_replies_rendered(messages: list[dict[str, Any]], text: str, indices: Sequence[int],
                           spans: Sequence[Span]) -> None:
    """Each located reply holds its own text and the names of the tools it calls: a template that drops tool
    calls (Phi-3.5's) would otherwise teach the model an empty reply."""
    for i, (start, end) in zip(indices, spans, strict=True):
        rendered = text[start:end]
        content = messages[i].get("content") or ""
        if content.strip() and content.strip() not in rendered:
            raise DataError(f"the chat template does not render the text of message {i + 1} as its reply")
        for call in messages[i].get("tool_calls") or []:
            if call["function"]["name"] not in rendered:
                raise DataError(f"the chat template does not render the tool calls of message {i + 1}")


def omits_text(messages: list[dict[str, Any]], text: str) -> bool:
    """Whether the template leaves out a system, user or tool message's text (Mistral's drops the system prompt
    unless the conversation ends with a user turn): worth a warning, not a reason to skip the example."""
    for message in messages:
        content = (message.get("content") or "").strip()
        in_text = content in text or json.dumps(content, ensure_ascii=False) in text
        if message["role"] != "assistant" and content and not in_text:
            return True
    return False
