"""Chat template rendering and the loss mask: each example tokenized, with a label on the assistant tokens that
carry loss (from the template's {% generation %} markers, or by rendering growing prefixes) and on every token
of a plain-text example; the rest IGNORE_INDEX."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import Example, TextDocument
from .errors import DataError

IGNORE_INDEX = -100
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken

    @property
    def loss_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class TokenizedSet:
    examples: list[TokenizedExample]
    truncated: int = 0  # conversations longer than max_seq_length, cut at it
    dropped: int = 0  # nothing left to learn from after truncation
    split: int = 0  # plain texts longer than max_seq_length, split into chunks (continued pre-training)

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def loss_tokens(self) -> int:
        return sum(e.loss_tokens for e in self.examples)


def has_generation_tags(tokenizer: Any) -> bool:
    return bool(GENERATION_TAG.search(tokenizer.get_chat_template()))


def _render(tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _message_char_spans(
    tokenizer: Any, messages: list[dict[str, Any]], text: str, indices: list[int]
) -> list[tuple[int, int]]:
    """Character span of each assistant message `i` in `text`: what rendering messages[:i+1] adds to rendering
    messages[:i] with the generation prompt (so the span holds the reply and its end-of-turn marker)."""
    spans = []
    for i in indices:
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1])
        if not through.startswith(before) or not text.startswith(through):
            raise DataError(
                "the base model's chat template renders earlier turns differently as the conversation grows, "
                "so assistant turns cannot be located; use a template with {% generation %} markers"
            )
        spans.append((len(before), len(through)))
    return spans


def _tokens_overlapping(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """1 for every token that overlaps a span (the rule transformers uses for its assistant mask)."""
    return [
        int(any(start < span_end and end > span_start for span_start, span_end in spans))
        for start, end in offsets
    ]


def assistant_token_mask(
    tokenizer: Any, messages: list[dict[str, Any]], *, use_generation_tags: bool
) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and a 0/1 mask of the assistant tokens that carry loss.

    With {% generation %} markers the template itself says which tokens are the assistant's; otherwise (and
    to leave out `weight: 0` messages) each assistant message is located by rendering growing prefixes.
    """
    template_messages = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    excluded = [i for i in assistant if messages[i].get("weight", 1) == 0]
    text = _render(tokenizer, template_messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    offsets = encoding["offset_mapping"]
    if use_generation_tags:
        tagged = tokenizer.apply_chat_template(
            template_messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        if (
            list(tagged["input_ids"]) != input_ids
        ):  # cannot happen unless transformers changes how it tokenizes
            raise DataError("apply_chat_template tokenized the conversation differently from the tokenizer")
        mask = list(tagged["assistant_masks"])
        if excluded:
            spans = _message_char_spans(tokenizer, template_messages, text, excluded)
            mask = [m * (1 - x) for m, x in zip(mask, _tokens_overlapping(offsets, spans), strict=True)]
    else:
        included = [i for i in assistant if i not in excluded]
        mask = _tokens_overlapping(offsets, _message_char_spans(tokenizer, template_messages, text, included))
    return input_ids, mask


def text_tokens(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """Token ids of a plain-text example, closed by the end-of-text token, every one of them a target."""
    input_ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None:
        input_ids.append(tokenizer.eos_token_id)
    return input_ids, [1] * len(input_ids)


def tokenize_conversations(
    tokenizer: Any, conversations: Sequence[Example], max_seq_length: int, *, use_generation_tags: bool
) -> TokenizedSet:
    result = TokenizedSet(examples=[])
    for conversation in conversations:
        if isinstance(conversation, TextDocument):
            chunks = text_chunks(*text_tokens(tokenizer, conversation.text), max_seq_length)
            result.split += len(chunks) > 1
            result.examples += [_example(ids, mask) for ids, mask in chunks]
            continue
        try:
            input_ids, mask = assistant_token_mask(
                tokenizer, conversation.messages, use_generation_tags=use_generation_tags
            )
        except DataError as exc:
            raise DataError(f"{conversation.source}: {exc}") from exc
        except Exception as exc:  # the chat template may raise on a message layout it does not support
            raise DataError(f"{conversation.source}: the chat template failed: {exc}") from exc
        if len(input_ids) > max_seq_length:
            result.truncated += 1
            input_ids, mask = input_ids[:max_seq_length], mask[:max_seq_length]
        example = _example(input_ids, mask)
        if example.loss_tokens == 0:
            result.dropped += 1
        else:
            result.examples.append(example)
    return result


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
