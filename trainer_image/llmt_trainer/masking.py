"""Chat template rendering and the loss mask: each example tokenized, with a label on the assistant tokens that
carry loss and on every token of a plain-text example; the rest IGNORE_INDEX.

The assistant tokens come from the template's {% generation %} markers when it has them; otherwise each reply is
located by prefix rendering or, where the template defeats that, by reply substitution (template_spans.py).
A conversation that no method can render is skipped and reported by its line; the job stops only when more
than MAX_SKIPPED_SHARE of a set's conversations are."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .data import Example, TextDocument
from .errors import DataError
from .template_spans import (
    Span,
    TemplateMarkers,
    check_replies_rendered,
    learn_markers,
    omits_text,
    prefix_spans,
    render,
    substitution_spans,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
GENERATION_TAGS, PREFIX_RENDERING, REPLY_SUBSTITUTION = "generation_tags", "prefix_rendering", "reply_substitution"
MAX_SKIPPED_SHARE = 0.10  # a set with more unrenderable conversations than this fails the job
SKIPPED_SHOWN = 5  # in the error that fails a job
SKIPPED_LISTED = 20  # in the job log and training_summary.json


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def tokens(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class SkippedExample:
    source: str  # "file.jsonl:line"
    reason: str


@dataclass
class TokenizedSet:
    examples: list[TokenizedExample]
    truncated: int = 0  # conversations longer than max_seq_length, cut at it
    dropped: int = 0  # nothing left to learn from after truncation
    split: int = 0  # plain texts longer than max_seq_length, split into chunks (continued pre-training)
    mask_methods: Counter[str] = field(default_factory=Counter)  # conversations located by each method
    skipped: list[SkippedExample] = field(default_factory=list)  # conversations the chat template cannot render
    template_omissions: int = 0  # conversations whose system, user or tool text the template leaves out

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def loss_tokens(self) -> int:
        return sum(e.loss_tokens for e in self.examples)

    @property
    def mask_method(self) -> str | None:
        """The method that located most conversations."""
        return self.mask_methods.most_common(1)[0][0] if self.mask_methods else None

    def mask_summary(self) -> dict[str, Any]:
        """For training_summary.json: how the replies were found, and the conversations skipped."""
        return {
            "mask_method": self.mask_method,
            "mask_methods": dict(self.mask_methods.most_common()),
            "skipped_examples": len(self.skipped),
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped[:SKIPPED_LISTED]],
            "template_omissions": self.template_omissions,
        }

    def log_masking(self, name: str) -> None:
        if self.mask_methods:
            methods = ", ".join(f"{method.replace('_', ' ')} ({n})" for method, n in self.mask_methods.most_common())
            log.info("%s data: assistant replies located by %s", name, methods)
        if self.skipped:
            log.warning("%s data: %d conversations skipped, the chat template cannot render them (a job stops "
                        "above %.0f%%):", name, len(self.skipped), 100 * MAX_SKIPPED_SHARE)
            for skipped in self.skipped[:SKIPPED_LISTED]:
                log.warning("  %s: %s", skipped.source, skipped.reason)
            if len(self.skipped) > SKIPPED_LISTED:
                log.warning("  (and %d more)", len(self.skipped) - SKIPPED_LISTED)
        if self.template_omissions:
            log.warning("%s data: in %d conversations the chat template leaves out the text of a system, user or "
                        "tool message, so the model trains without it", name, self.template_omissions)


@dataclass(frozen=True)
class MaskedConversation:
    input_ids: list[int]
    mask: list[int]  # 1 on the tokens that carry loss
    method: str
    omits_text: bool  # the template leaves out some system, user or tool text


def has_generation_tags(tokenizer: Any) -> bool:
    return bool(GENERATION_TAG.search(tokenizer.get_chat_template()))


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call as templates expect it: arguments as an object (OpenAI's format sends a JSON string, which
    a template's tojson would quote a second time), name first (the order templates write it in)."""
    function = dict(call["function"])
    arguments = function.pop("arguments", {})
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else arguments
    return {**call, "function": {"name": function.pop("name"), "arguments": arguments, **function}}


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the chat template gets them: no `weight`, tool calls as templates expect them."""
    out = []
    for message in messages:
        message = {k: v for k, v in message.items() if k != "weight"}
        if message.get("tool_calls"):
            message["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
        out.append(message)
    return out


def _tokens_overlapping(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[int]:
    """1 for every token that overlaps a span (the rule transformers uses for its assistant mask)."""
    return [
        int(any(start < span_end and end > span_start for span_start, span_end in spans))
        for start, end in offsets
    ]


def _reply_spans(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, text: str,
                 indices: list[int], markers: TemplateMarkers) -> tuple[list[Span], str]:
    try:
        spans, method = prefix_spans(tokenizer, messages, tools, text, indices, markers), PREFIX_RENDERING
    except Exception:  # the template renders growing prefixes differently, or refuses one: substitute instead
        spans, method = substitution_spans(tokenizer, messages, tools, text, indices, markers), REPLY_SUBSTITUTION
    check_replies_rendered(messages, text, indices, spans)
    return spans, method


def mask_conversation(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
    use_generation_tags: bool, markers: TemplateMarkers,
) -> MaskedConversation:
    """The rendered conversation's token ids and a 0/1 mask of the tokens that carry loss: each weighted reply
    (content or tool calls) with the marker that ends its turn, nothing of the other turns or `weight: 0`
    replies."""
    prepared = template_messages(messages)
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    excluded = [i for i in assistant if messages[i].get("weight", 1) == 0]
    text = render(tokenizer, prepared, tools)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    offsets = encoding["offset_mapping"]
    if use_generation_tags:
        tagged = tokenizer.apply_chat_template(
            prepared, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        if list(tagged["input_ids"]) != input_ids:  # cannot happen unless transformers changes how it tokenizes
            raise DataError("apply_chat_template tokenized the conversation differently from the tokenizer")
        mask, method = list(tagged["assistant_masks"]), GENERATION_TAGS
        if excluded:
            spans, _ = _reply_spans(tokenizer, prepared, tools, text, excluded, markers)
            mask = [m * (1 - x) for m, x in zip(mask, _tokens_overlapping(offsets, spans), strict=True)]
    else:
        included = [i for i in assistant if i not in excluded]
        spans, method = _reply_spans(tokenizer, prepared, tools, text, included, markers)
        mask = _tokens_overlapping(offsets, spans)
    return MaskedConversation(input_ids, mask, method, omits_text(prepared, text))


def assistant_token_mask(
    tokenizer: Any, messages: list[dict[str, Any]], *, use_generation_tags: bool,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[list[int], list[int]]:
    masked = mask_conversation(tokenizer, messages, tools, use_generation_tags=use_generation_tags,
                               markers=learn_markers(tokenizer))
    return masked.input_ids, masked.mask


def text_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Token ids of a plain-text example, closed by the end-of-text token, every one of them a target."""
    input_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None:
        input_ids.append(tokenizer.eos_token_id)
    return input_ids, [1] * len(input_ids)


def skip_reason(exc: Exception) -> str:
    reason = str(exc) if isinstance(exc, DataError) else f"the chat template failed: {exc}"
    return reason if len(reason) <= 300 else reason[:297] + "..."


def check_skipped(result: TokenizedSet, conversations: int) -> None:
    skipped = result.skipped
    if len(skipped) > MAX_SKIPPED_SHARE * conversations:
        shown = "; ".join(f"{s.source}: {s.reason}" for s in skipped[:SKIPPED_SHOWN])
        more = f" (and {len(skipped) - SKIPPED_SHOWN} more)" if len(skipped) > SKIPPED_SHOWN else ""
        raise DataError(
            f"{len(skipped)} of {conversations} conversations cannot be rendered by the base model's chat template "
            f"(a job stops when more than {MAX_SKIPPED_SHARE:.0%} cannot): {shown}{more}"
        )


def tokenize_conversations(
    tokenizer: Any, conversations: Sequence[Example], max_seq_length: int, *, use_generation_tags: bool
) -> TokenizedSet:
    result = TokenizedSet(examples=[])
    markers: TemplateMarkers | None = None
    chats = 0
    for conversation in conversations:
        if isinstance(conversation, TextDocument):
            chunks = text_chunks(*text_tokens(tokenizer, conversation.text), max_seq_length)
            result.split += len(chunks) > 1
            result.examples += [_example(ids, mask) for ids, mask in chunks]
            continue
        chats += 1
        markers = markers or learn_markers(tokenizer)
        try:
            masked = mask_conversation(tokenizer, conversation.messages, conversation.tools,
                                       use_generation_tags=use_generation_tags, markers=markers)
        except Exception as exc:  # the template may raise on a message layout it does not support
            result.skipped.append(SkippedExample(conversation.source, skip_reason(exc)))
            continue
        example = counted_example(result, masked, max_seq_length)
        if example.loss_tokens == 0:
            result.dropped += 1
        else:
            result.examples.append(example)
    check_skipped(result, chats)
    return result


def counted_example(result: TokenizedSet, masked: MaskedConversation, max_seq_length: int) -> TokenizedExample:
    """A masked conversation (mask_conversation's) as a training example cut to max_seq_length, counted in `result`
    (how it was masked, what the template left out, whether it was truncated)."""
    result.mask_methods[masked.method] += 1
    result.template_omissions += masked.omits_text
    input_ids, mask = masked.input_ids, masked.mask
    if len(input_ids) > max_seq_length:
        result.truncated += 1
        input_ids, mask = input_ids[:max_seq_length], mask[:max_seq_length]
    return _example(input_ids, mask)


def _example(input_ids: list[int], mask: list[int]) -> TokenizedExample:
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(input_ids, mask, strict=True)]
    # The first token is never a target; in a packed row it would otherwise be predicted from the end of
    # the previous example.
    labels[0] = IGNORE_INDEX
    return TokenizedExample(input_ids, labels)


def text_chunks(input_ids: list[int], mask: list[int], max_seq_length: int) -> list[tuple[list[int], list[int]]]:
    """A text longer than max_seq_length as chunks of at most that many tokens, not cut short. Consecutive chunks
    share one token (a chunk's first, never a target itself, is the previous chunk's last), so every token after
    the text's first is a target exactly once."""
    if len(input_ids) <= max_seq_length:
        return [(input_ids, mask)]
    stride = max(1, max_seq_length - 1)
    starts = range(0, len(input_ids) - 1, stride)
    return [(input_ids[i:i + max_seq_length], mask[i:i + max_seq_length]) for i in starts]


def dataset_fingerprint(*sets: TokenizedSet) -> str:
    digest = hashlib.sha256()
    for tokenized in sets:
        for example in tokenized.examples:
            digest.update(json.dumps([example.input_ids, example.labels]).encode())
        digest.update(b"|")
    return digest.hexdigest()
