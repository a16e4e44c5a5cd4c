"""bench.trainer's data, model shapes, FLOPs accounting and what it observes of a run (the timed runs themselves
are the bench, not a test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from bench.stats import Aim
from bench.trainer import mixed_length_data, observing, quick_shape, shape_results
from bench.trainer_baselines import TRL_MISSING, Run, lora_config, require_trl
from bench.trainer_flops import LLAMA_3_1_8B, LLAMA_3_2_1B, Shape, Work, like_for_like, training_flops
from trainer_image.llmt_trainer.loss import loss_over_targets

CATALOG = Path(__file__).parents[2] / "services" / "training" / "catalog.json"
# hidden 4, intermediate 8, 1 layer, 2 heads of 2 dims, 1 kv head, vocabulary 10, tied embeddings.
TINY = Shape("tiny", hidden=4, intermediate=8, layers=1, heads=2, kv_heads=1, vocab=10, tied_embeddings=True)


def built_parameters(shape: Shape) -> int:
    """Parameters of the model transformers builds from the shape's config (on the meta device: no memory)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**shape.config()))
    return sum(p.numel() for p in model.parameters())


def test_bench_data_is_deterministic_and_mixed_in_length() -> None:
    data = mixed_length_data(96, seed=0)
    assert data == mixed_length_data(96, seed=0)
    words = [len(" ".join(m["content"] for m in e["messages"]).split()) for e in data]
    assert min(words) < 30 and max(words) > 150  # short and long examples, so padding costs show


def test_llama_3_2_1b_shape_is_the_catalog_model() -> None:
    catalog: list[dict[str, Any]] = json.loads(CATALOG.read_text())["models"]
    listed = next(m for m in catalog if m["id"] == "meta-llama/Llama-3.2-1B-Instruct")
    assert LLAMA_3_2_1B.parameters() == listed["parameters"] == 1_235_814_400
    assert built_parameters(LLAMA_3_2_1B) == listed["parameters"]
    config = LLAMA_3_2_1B.config()
    assert {k: config[k] for k in listed["architecture"] if k != "model_type"} == {
        k: v for k, v in listed["architecture"].items() if k != "model_type"}


def test_llama_3_1_8b_shape_counts_per_layer() -> None:
    assert LLAMA_3_1_8B.parameters() == 8_030_261_248  # meta-llama/Llama-3.1-8B
    one_layer = LLAMA_3_1_8B.with_layers(1)
    # Untied input and output embeddings (2 x 128,256 x 4,096), one layer of 218,112,000, the final norm.
    assert one_layer.parameters() == 2 * 128_256 * 4_096 + 218_112_000 + 4_096 == built_parameters(one_layer)
    assert one_layer.label == "Llama-3.1-8B (1 of its 32 layers)"
    assert built_parameters(quick_shape()) == quick_shape().parameters() < 5e6


def test_lora_flops_match_a_hand_count() -> None:
    # Projections (in x out): q 4x4, k 4x2, v 4x2, o 4x4, gate 4x8, up 4x8, down 8x4: N = 144 frozen weights.
    assert TINY.linear_parameters() == 16 + 8 + 8 + 16 + 32 + 32 + 32 == 144
    # A rank-1 adapter on each: in + out parameters: P = 8 + 6 + 6 + 8 + 12 + 12 + 12 = 64.
    assert TINY.lora_parameters(1) == 64
    # Two examples of 3 and 1 tokens: 4 tokens, 6 + 1 = 7 causal query-key pairs; 2 positions through the output.
    work = Work((3, 1), head_rows=2)
    frozen = 4 * 144 * 4  # forward 2N + activation gradient 2N, per token
    adapter = 6 * 64 * 4
    attention = 12 * 7 * 4  # QK^T and AV over q_dim 4: 4 x pairs x q_dim forward, twice that backward
    output = 4 * (10 * 4) * 2  # 4VH per position through the output layer
    flops = training_flops(TINY, work, lora_r=1)
    assert flops.counted == flops.hardware == frozen + adapter + attention + output == 4496
    # Like-for-like: all 4 tokens through the output layer.
    assert like_for_like(TINY, (3, 1), lora_r=1) == frozen + adapter + attention + 4 * 40 * 4


def test_recomputation_is_hardware_flops_only() -> None:
    checkpointed = Work((3, 1), head_rows=2, head_rows_recomputed=2, layers_recomputed=1.0)
    flops = training_flops(TINY, checkpointed, lora_r=1)
    assert flops.counted == 4496  # the same useful work
    # Another forward of the decoder (2N + 2P per token, attention's forward) and of the 2 output rows (2VH each).
    assert flops.hardware == 4496 + (2 * 144 + 2 * 64) * 4 + 4 * 7 * 4 + 2 * 40 * 2 == 6432
    assert flops.hardware > flops.counted


def tiny_llama() -> Any:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))  # fmt: skip


def test_observing_sees_recomputation_in_the_backward_pass() -> None:
    model = tiny_llama()
    model.train()
    ids = torch.randint(0, 50, (2, 5))
    with observing(model) as (head, layer):
        model(input_ids=ids, use_cache=False).logits.sum().backward()
        assert (head.forward, head.again, layer.forward, layer.again) == (10, 0, 10, 0)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(input_ids=ids, use_cache=False).logits.sum().backward()
        assert (head.forward, head.again, layer.forward, layer.again) == (20, 0, 20, 10)
    model(input_ids=ids, use_cache=False).logits.sum().backward()
    assert (head.forward, layer.forward) == (20, 20)  # the block is over: nothing counts any more


def test_observing_sees_the_trainers_own_loss_put_only_the_labelled_positions_through_the_output_layer() -> None:
    # GIVEN a LoRA model as the trainer builds it (frozen output layer) and a row of 12 tokens, 4 of them targets
    model = get_peft_model(tiny_llama(), lora_config())
    ids = torch.randint(0, 50, (1, 12))
    positions = torch.tensor([3, 4, 9, 10])
    # WHEN the trainer's loss runs forward and backward under observation
    with observing(model.get_base_model()) as (head, layer):
        result = loss_over_targets(model, ids, torch.arange(12).unsqueeze(0), positions, ids[0, positions + 1], 2)
        result.loss.backward()
    # THEN the decoder saw every position, the output layer only the 4 targets
    assert (layer.forward, head.forward) == (12, 4)


def test_the_bench_names_the_missing_trl_and_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError
    with pytest.raises(SystemExit) as stopped:
        require_trl()
    assert stopped.value.code == TRL_MISSING
    assert "requirements/bench.txt" in TRL_MISSING


def test_each_shape_reports_both_ratios_with_mfu_and_hfu() -> None:
    work = Work((3, 1), head_rows=4)
    seconds = {"ours": [1.0, 2.0, 1.0], "padded Trainer": [2.0, 2.0, 3.0], "TRL SFTTrainer": [1.0, 3.0, 1.5]}
    runs = {name: [Run(s, 4, work) for s in times] for name, times in seconds.items()}
    padded, trl = shape_results("tiny", TINY, runs, peak=1e3, peak_source="test", precision="fp32")
    assert padded.name == "tiny_ours_vs_padded_trainer_tokens_per_s" and padded.aim == Aim(">=", 1.5)
    assert trl.name == "tiny_ours_vs_trl_sft_tokens_per_s" and trl.aim == Aim(">=", 1.2)
    # Per round (time ratios): padded 2, 1, 3 -> median 2; TRL 1, 1.5, 1.5 -> 1.5.
    assert (padded.ratio, trl.ratio) == (2.0, 1.5)
    # MFU of the median run by time (1 s): the hand count with all 4 positions through the output layer (4816), its
    # rank-1 adapter (6 x 64 x 4) swapped for the bench's rank 8 (6 x 8 x 64 x 4), over a peak of 1000 FLOP/s.
    assert padded.figures["mfu"]["ours"] == round((4816 - 6 * 64 * 4 + 6 * 8 * 64 * 4) / 1.0 / 1e3, 4)
    assert all(f"{side}: " in trl.note for side in ("ours", "TRL SFTTrainer")) and "HFU" in trl.note
