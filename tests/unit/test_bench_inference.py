"""bench.inference's pure parts: the served model's tokenizer covers every id the model can emit, both sides
must have generated the same thing, the rounds alternate their order, the first-token clock."""

from __future__ import annotations

from typing import Any

import pytest

from bench.inference import round_order
from bench.inference_model import QWEN25_05B, SPECIAL_TOKENS, build_tokenizer
from bench.inference_sides import FirstTokenClock, Generation, Mismatch, same_generation


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer(QWEN25_05B["vocab_size"])


def test_the_tokenizer_has_exactly_the_models_vocabulary_with_qwens_special_tokens_last(tokenizer: Any) -> None:
    tok = tokenizer
    vocab = QWEN25_05B["vocab_size"]
    assert len(tok) == vocab
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [vocab - 3, vocab - 2, vocab - 1]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_every_merged_token_decodes_to_text_so_a_random_model_streams_content(tokenizer: Any) -> None:
    tok = tokenizer
    last = QWEN25_05B["vocab_size"] - len(SPECIAL_TOKENS)
    ids = [*range(256, 1000), *range(9000, 10000), *range(last - 1000, last)]  # pairs, then triples
    assert all(tok.decode([i]).isascii() and len(tok.decode([i])) in (2, 3) for i in ids)


def test_the_chat_template_is_qwens_and_text_round_trips(tokenizer: Any) -> None:
    tok = tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert tok.decode(ids) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhy is the sky blue?"
                               "<|im_end|>\n<|im_start|>assistant\n")
    assert len(tok.encode("Why is the sky blue?")) <= len("Why is the sky blue?") / 2  # pairs and triples merge


def test_rounds_alternate_a_b_then_b_a() -> None:
    assert round_order(0) == ["plain", "stream", "in_process"]
    assert round_order(1) == ["in_process", "stream", "plain"]
    assert round_order(2, ("gateway", "in_process")) == ["gateway", "in_process"]
    assert round_order(3, ("gateway", "in_process")) == ["in_process", "gateway"]


def test_sides_that_generated_differently_are_refused() -> None:
    reference = Generation(1.0, 32, "abc")
    same_generation(reference, Generation(2.0, 32, "abc"), "gateway")
    with pytest.raises(Mismatch, match="31 completion tokens"):
        same_generation(reference, Generation(1.0, 31, "abc"), "gateway")
    with pytest.raises(Mismatch, match="text differs"):
        same_generation(reference, Generation(1.0, 32, "abd"), "gateway")
    assert Generation(2.0, 32, "abc").tokens_per_s == 16.0


def test_the_first_token_clock_skips_the_prompt() -> None:
    clock = FirstTokenClock()
    clock.put("prompt")
    assert clock.first_s is None
    clock.put("token 1")
    first = clock.first_s
    clock.put("token 2")
    assert first is not None and clock.first_s == first
