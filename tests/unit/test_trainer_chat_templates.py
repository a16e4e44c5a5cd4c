"""The loss mask with every catalog model's own chat template (tests/fixtures/chat_templates, sources noted in
SOURCES.md), each on a small tokenizer built here with that model's special tokens: multi-turn conversations, a
system message, `weight: 0` replies and tool calls. The masked tokens must decode to exactly each weighted reply
and the marker that ends its turn. Where a template cannot express a conversation, the example is skipped and
named by its line, and the job goes on."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from tests.support.chat_templates import (
    CATALOG_TEMPLATES,
    DEMO_MODEL_ID,
    FIXTURES,
    LLAMA32,
    LLAMA33,
    MISTRAL_V03,
    PHI35_MINI,
    QWEN25,
    TemplateModel,
    build_tokenizer,
    catalog_model_ids,
)
from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer.data import Conversation, load_conversations
from trainer_image.llmt_trainer.errors import DataError
from trainer_image.llmt_trainer.masking import (
    PREFIX_RENDERING,
    REPLY_SUBSTITUTION,
    assistant_token_mask,
    has_generation_tags,
    mask_conversation,
    template_messages,
    tokenize_conversations,
)
from trainer_image.llmt_trainer.model_loading import fallback_chat_template
from trainer_image.llmt_trainer.template_spans import learn_markers, prefix_spans, render, substitution_spans

SYSTEM = "You are a guide to the animals of Zorbia."
MULTI_TURN: list[dict[str, Any]] = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What color is the glimp?"},
    {"role": "assistant", "content": "The glimp is red."},
    {"role": "user", "content": "Where does the zorv live?"},
    {"role": "assistant", "content": "The zorv lives in the cave.", "weight": 0},
    {"role": "user", "content": "And what does the koro eat?"},
    {"role": "assistant", "content": "The koro eats nuts."},
]
CALL = {"id": "call12345", "type": "function",  # nine alphanumerics, as Mistral's template demands
        "function": {"name": "lookup_animal", "arguments": '{"animal": "koro"}'}}
TOOL_CALLS: list[dict[str, Any]] = [
    {"role": "system", "content": "You look animals up before you answer."},
    {"role": "user", "content": "What does the koro eat?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call12345", "name": "lookup_animal", "content": "koro: eats nuts"},
    {"role": "assistant", "content": "The koro eats nuts."},
]
TOOLS = [{"type": "function", "function": {
    "name": "lookup_animal", "description": "Facts about one animal of Zorbia.",
    "parameters": {"type": "object", "properties": {"animal": {"type": "string"}}, "required": ["animal"]}}}]

# What each template writes for a reply and the end of its turn: the masked text. Mistral's puts a space
# before each reply (in this byte-level tokenizer it belongs to the reply's first word).
REPLY = {QWEN25: "{}<|im_end|>", LLAMA32: "{}<|eot_id|>", LLAMA33: "{}<|eot_id|>", MISTRAL_V03: " {}</s>",
         PHI35_MINI: "{}<|end|>"}
TOOL_CALL_REPLY = {
    QWEN25: '<tool_call>\n{"name": "lookup_animal", "arguments": {"animal": "koro"}}\n</tool_call><|im_end|>',
    LLAMA32: '{"name": "lookup_animal", "parameters": {"animal": "koro"}}<|eot_id|>',
    MISTRAL_V03: '[TOOL_CALLS] [{"name": "lookup_animal", "arguments": {"animal": "koro"}, "id": "call12345"}]</s>',
}
# Mistral's template renders a system prompt only with a conversation's last user turn (so a conversation
# that ends with a reply loses it), and Phi-3.5's writes EOS after the last turn: prefix rendering fails on
# both, and reply substitution takes over.
METHOD = {QWEN25: PREFIX_RENDERING, LLAMA32: PREFIX_RENDERING, LLAMA33: PREFIX_RENDERING,
          MISTRAL_V03: REPLY_SUBSTITUTION, PHI35_MINI: REPLY_SUBSTITUTION}
MODELS = sorted(CATALOG_TEMPLATES)


def masked_runs(tokenizer: Any, input_ids: list[int], mask: list[int]) -> list[str]:
    """The decoded text of each contiguous run of masked tokens."""
    runs = groupby(zip(input_ids, mask, strict=True), key=lambda pair: pair[1])
    return [tokenizer.decode([token for token, _ in run]) for keep, run in runs if keep]


def masked(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Any:
    return mask_conversation(tokenizer, messages, tools, use_generation_tags=has_generation_tags(tokenizer),
                             markers=learn_markers(tokenizer))


def _lines(folder: Path, records: list[dict[str, Any]]) -> list[Any]:
    write_jsonl(records, folder / "train" / "part-0.jsonl")
    return load_conversations(folder / "train", "train")


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> TemplateModel:
    return CATALOG_TEMPLATES[request.param]


def test_every_catalog_model_has_its_own_template_with_its_source_noted() -> None:
    assert sorted(set(catalog_model_ids()) - {DEMO_MODEL_ID}) == MODELS
    sources = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    for model_id, template in CATALOG_TEMPLATES.items():
        assert model_id in sources and template.template_file in sources
        assert not has_generation_tags(build_tokenizer(template)), model_id  # none has generation markers


def test_multi_turn_with_a_system_message_masks_each_weighted_reply_and_its_end(model: TemplateModel) -> None:
    tokenizer = build_tokenizer(model)

    result = masked(tokenizer, MULTI_TURN)

    # The two weighted replies and their end-of-turn markers; nothing of the system or user turns, nor the
    # weight-0 reply.
    assert masked_runs(tokenizer, result.input_ids, result.mask) == [
        REPLY[model].format("The glimp is red."), REPLY[model].format("The koro eats nuts.")]
    assert result.method == METHOD[model]
    assert result.omits_text == (model is MISTRAL_V03)  # its template drops the system prompt here


@pytest.mark.parametrize("model", [QWEN25, LLAMA32, MISTRAL_V03], ids=["qwen2.5", "llama-3.2", "mistral-v0.3"])
def test_a_tool_call_with_null_content_is_a_target_and_the_tool_result_is_not(model: TemplateModel) -> None:
    tokenizer = build_tokenizer(model)

    result = masked(tokenizer, TOOL_CALLS, TOOLS)

    assert masked_runs(tokenizer, result.input_ids, result.mask) == [
        TOOL_CALL_REPLY[model], REPLY[model].format("The koro eats nuts.")]
    rendered = tokenizer.decode(result.input_ids)
    assert "Facts about one animal of Zorbia." in rendered  # the record's tools reached the template
    assert "koro: eats nuts" in rendered


def test_phi_35_cannot_express_tool_calls_so_such_examples_are_skipped_by_line(tmp_path: Path) -> None:
    # Phi-3.5-mini's template has no tool-call syntax: it drops tool_calls and tool messages, and fails on a
    # null content. Training on its rendering would teach an empty reply, so the example is skipped.
    tokenizer = build_tokenizer(PHI35_MINI)
    empty_content = [{**m, "content": ""} if m.get("tool_calls") else m for m in TOOL_CALLS]
    plain = [{"messages": MULTI_TURN}] * 18
    conversations = _lines(tmp_path, [*plain, {"messages": TOOL_CALLS, "tools": TOOLS}, {"messages": empty_content}])

    tokenized = tokenize_conversations(tokenizer, conversations, 512, use_generation_tags=False)

    assert [s.source for s in tokenized.skipped] == ["part-0.jsonl:19", "part-0.jsonl:20"]
    assert "the chat template failed" in tokenized.skipped[0].reason
    assert "does not render the tool calls of message 3" in tokenized.skipped[1].reason
    assert len(tokenized.examples) == 18 and tokenized.mask_methods == {REPLY_SUBSTITUTION: 18}


@pytest.mark.parametrize(("model", "refused", "why"), [
    (LLAMA32, {"tool_calls": [CALL, {**CALL, "id": "call67890"}]}, "only supports single tool-calls"),
    (MISTRAL_V03, {"tool_calls": [{**CALL, "id": "call-1"}]}, "Tool call IDs should be alphanumeric"),
], ids=["llama-3.2-parallel-calls", "mistral-short-call-id"])
def test_what_a_template_refuses_by_design_is_skipped_with_its_line_and_reason(
    model: TemplateModel, refused: dict[str, Any], why: str, tmp_path: Path
) -> None:
    tokenizer = build_tokenizer(model)
    bad = [m if not m.get("tool_calls") else {**m, **refused} for m in TOOL_CALLS]
    conversations = _lines(tmp_path, [{"messages": MULTI_TURN}] * 10 + [{"messages": bad}])

    tokenized = tokenize_conversations(tokenizer, conversations, 512, use_generation_tags=False)

    [skipped] = tokenized.skipped
    assert skipped.source == "part-0.jsonl:11" and why in skipped.reason
    assert len(tokenized.examples) == 10


def test_a_set_fails_only_when_more_than_a_tenth_cannot_be_rendered(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(PHI35_MINI)
    one_in_ten = _lines(tmp_path / "a", [{"messages": MULTI_TURN}] * 9 + [{"messages": TOOL_CALLS}])
    two_in_ten = _lines(tmp_path / "b", [{"messages": MULTI_TURN}] * 8 + [{"messages": TOOL_CALLS}] * 2)

    tokenized = tokenize_conversations(tokenizer, one_in_ten, 512, use_generation_tags=False)
    assert [s.source for s in tokenized.skipped] == ["part-0.jsonl:10"] and len(tokenized.examples) == 9

    with pytest.raises(DataError) as failure:
        tokenize_conversations(tokenizer, two_in_ten, 512, use_generation_tags=False)
    message = str(failure.value)
    assert "2 of 10 conversations cannot be rendered" in message and "more than 10%" in message
    assert "part-0.jsonl:9: the chat template failed" in message and "part-0.jsonl:10: " in message


# ------------------------------------------------------------------------- the fallback agrees where both work


@pytest.mark.parametrize("model", [QWEN25, LLAMA32], ids=["qwen2.5", "llama-3.2"])
@pytest.mark.parametrize("messages", [MULTI_TURN, TOOL_CALLS], ids=["multi-turn", "tool-calls"])
def test_reply_substitution_finds_what_prefix_rendering_finds(model: TemplateModel,
                                                              messages: list[dict[str, Any]]) -> None:
    tokenizer = build_tokenizer(model)
    markers = learn_markers(tokenizer)
    prepared = template_messages(messages)
    text = render(tokenizer, prepared, None)
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight", 1)]

    assert substitution_spans(tokenizer, prepared, None, text, replies, markers) == prefix_spans(
        tokenizer, prepared, None, text, replies, markers)


def test_phi_35_single_turn_learns_the_end_of_turn_not_the_eos_after_it() -> None:
    tokenizer = build_tokenizer(PHI35_MINI)
    single = MULTI_TURN[:3]

    result = masked(tokenizer, single)

    assert tokenizer.decode(result.input_ids).endswith("<|end|>\n<|endoftext|>")
    assert result.method == PREFIX_RENDERING
    assert masked_runs(tokenizer, result.input_ids, result.mask) == ["The glimp is red.<|end|>"]


# ------------------------------------------------------------------------------- the demo model, as before


@pytest.fixture(scope="module")
def demo_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


def test_the_demo_template_and_the_chatml_fallback_mask_as_before(demo_tokenizer_dir: Path) -> None:
    demo = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    chatml = AutoTokenizer.from_pretrained(demo_tokenizer_dir)
    chatml.chat_template = fallback_chat_template(chatml.eos_token)
    expected = ["The glimp is red.<|end|>", "The koro eats nuts.<|end|>"]

    for tokenizer in (demo, chatml):
        assert has_generation_tags(tokenizer)
        result = masked(tokenizer, MULTI_TURN)
        assert result.method == "generation_tags" and not result.omits_text
        assert masked_runs(tokenizer, result.input_ids, result.mask) == expected
        # Without the markers, prefix rendering finds the very same tokens.
        assert assistant_token_mask(tokenizer, MULTI_TURN, use_generation_tags=False) == (
            result.input_ids, result.mask)
    examples = [Conversation(e["messages"], f"demo:{i}") for i, e in enumerate(make_demo_dataset(8, seed=1))]
    tokenized = tokenize_conversations(demo, examples, 512, use_generation_tags=True)
    assert tokenized.mask_methods == {"generation_tags": 8} and not tokenized.skipped


# ------------------------------------------------------------------------------------------- reading data


def test_the_channel_accepts_tool_calls_as_the_files_service_does(tmp_path: Path) -> None:
    legacy: dict[str, Any] = {"role": "assistant", "function_call": {"name": "lookup_animal", "arguments": "{}"}}
    text_parts = [{"type": "text", "text": "What does the "}, {"type": "text", "text": "koro eat?"}]
    parts: dict[str, Any] = {"role": "user", "content": text_parts}
    records: list[dict[str, Any]] = [{"messages": TOOL_CALLS, "tools": TOOLS},
                                     {"messages": [parts, legacy, {"role": "tool", "content": "nuts"}, MULTI_TURN[2]]}]

    first, second = _lines(tmp_path, records)

    assert first.tools == TOOLS and first.messages[2] == {"role": "assistant", "tool_calls": [CALL]}
    assert first.messages[3]["tool_call_id"] == "call12345" and first.messages[3]["name"] == "lookup_animal"
    assert second.messages[0]["content"] == "What does the koro eat?"
    assert second.messages[1]["tool_calls"] == [{"type": "function", "function": legacy["function_call"]}]


@pytest.mark.parametrize(("message", "problem"), [
    ({"role": "assistant", "content": None}, "assistant message content must be a string"),
    ({"role": "user", "content": None, "tool_calls": [CALL]}, "tool_calls is only allowed on assistant messages"),
    ({"role": "assistant", "tool_calls": []}, "tool_calls must be a non-empty list"),
    ({"role": "assistant", "tool_calls": [{"id": "x", "function": {"arguments": "{}"}}]},
     "each tool call must be an object with a function that has a name"),
    ({"role": "tool", "content": "nuts", "tool_call_id": 7}, "tool_call_id must be a string"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
     "user message content must be a string"),
])
def test_real_mistakes_in_messages_are_refused_with_their_line(
    message: dict[str, Any], problem: str, tmp_path: Path
) -> None:
    good = {"messages": MULTI_TURN}
    write_jsonl([good, {"messages": [MULTI_TURN[1], message, MULTI_TURN[2]]}], tmp_path / "train" / "part-0.jsonl")

    with pytest.raises(DataError, match=rf"part-0\.jsonl:2: {problem}"):
        load_conversations(tmp_path / "train", "train")


def test_a_record_whose_tools_are_not_a_list_of_objects_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-0.jsonl").write_text(json.dumps({"messages": MULTI_TURN, "tools": "lookup"}) + "\n")

    with pytest.raises(DataError, match=r"part-0\.jsonl:1: tools must be a list of objects"):
        load_conversations(tmp_path / "train", "train")
