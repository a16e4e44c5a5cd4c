"""bench.trainer's data, model shapes, FLOPs accounting and what it observes of a run (the timed runs themselves
are the bench, not a test)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from bench.stats import Aim
from bench.trainer import mixed_length_data, observing, quick_shape, shape_results
from bench.trainer_baselines import TRL_MISSING, Run, lora_config, require_trl
from bench.trainer_flops import (
    LLAMA_3_1_8B,
    LLAMA_3_2_1B,
    Shape,
    Work,
    gpu_peak_tflops,
    like_for_like,
    training_flops,
)
from bench.trainer_memory import measuring, mib
from trainer_image.llmt_trainer import loss as trainer_loss
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


def _observed_loss() -> tuple[Any, Any]:
    """(output layer, first layer) counters of the trainer's loss, forward and backward, on a LoRA model as the trainer
    builds it (frozen output layer) over a row of 12 tokens, 4 of them targets."""
    model = get_peft_model(tiny_llama(), lora_config())
    ids = torch.randint(0, 50, (1, 12))
    positions = torch.tensor([3, 4, 9, 10])
    with observing(model.get_base_model()) as (head, layer):
        result = loss_over_targets(model, ids, torch.arange(12).unsqueeze(0), positions, ids[0, positions + 1], 2)
        result.loss.backward()
    return head, layer


def test_observing_sees_the_trainers_own_loss_put_only_the_labelled_positions_through_the_output_layer() -> None:
    # GIVEN a LoRA model as the trainer builds it (frozen output layer) and a row of 12 tokens, 4 of them targets
    # WHEN the trainer's loss runs forward and backward under observation
    head, layer = _observed_loss()
    # THEN the decoder saw every position, the output layer only the 4 targets
    assert (layer.forward, head.forward) == (12, 4)


def test_observing_counts_the_output_layer_where_the_loss_hands_its_weight_to_liger(
        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # GIVEN a fused loss standing in for Liger's (on CUDA): it takes the weight, never calls F.linear
    calls = []

    def fake_liger(device: torch.device) -> Any:
        def fused(weight: torch.Tensor, hidden: torch.Tensor, targets: torch.Tensor) -> Any:
            calls.append(hidden.shape[0])
            logits = torch.matmul(hidden, weight.t()).float()
            loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
            return SimpleNamespace(loss=loss, predicted_tokens=logits.argmax(-1))

        return fused

    monkeypatch.setattr(trainer_loss, "liger_loss", fake_liger)
    # WHEN the trainer's loss runs under observation
    head, layer = _observed_loss()
    # THEN the 4 targets are counted at the fused call, once, and the trainer's loss is given back its own function
    assert calls == [4] and (layer.forward, head.forward, head.again) == (12, 4, 0)
    assert trainer_loss.liger_loss is fake_liger


def test_the_bench_names_the_missing_trl_and_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError
    with pytest.raises(SystemExit) as stopped:
        require_trl()
    assert stopped.value.code == TRL_MISSING
    assert "requirements/dev.txt" in TRL_MISSING and "requirements/bench.txt" in TRL_MISSING


def test_each_shape_reports_both_ratios_with_mfu_hfu_and_peak_memory() -> None:
    work = Work((3, 1), head_rows=4)
    seconds = {"ours": [1.0, 2.0, 1.0], "padded Trainer": [2.0, 2.0, 3.0], "TRL SFTTrainer": [1.0, 3.0, 1.5]}
    memory = {"ours": 2**20, "padded Trainer": 4 * 2**20, "TRL SFTTrainer": 2 * 2**20}
    runs = {name: [Run(s, 4, work, peak_bytes=memory[name]) for s in times] for name, times in seconds.items()}
    padded, padded_memory, trl, trl_memory, mfu = shape_results("tiny", TINY, runs, peak=1e3, peak_source="test",
                                                                precision="fp32")  # fmt: skip
    assert padded.name == "tiny_ours_vs_padded_trainer_tokens_per_s" and padded.aim == Aim(">=", 2.0)
    assert trl.name == "tiny_ours_vs_trl_sft_tokens_per_s" and trl.aim == Aim(">=", 1.2)
    # Per round (time ratios): padded 2, 1, 3 -> median 2; TRL 1, 1.5, 1.5 -> 1.5.
    assert (padded.ratio, trl.ratio) == (2.0, 1.5)
    # MFU of the median run by time (1 s): the hand count with all 4 positions through the output layer (4816), its
    # rank-1 adapter (6 x 64 x 4) swapped for the bench's rank 8 (6 x 8 x 64 x 4), over a peak of 1000 FLOP/s.
    expected_mfu = (4816 - 6 * 64 * 4 + 6 * 8 * 64 * 4) / 1.0 / 1e3
    assert padded.figures["mfu"]["ours"] == round(expected_mfu, 4)
    assert all(f"{side}: " in trl.note for side in ("ours", "TRL SFTTrainer")) and "HFU" in trl.note
    # Peak memory: ours / each baseline, context (no aim), each side's MiB in the note.
    assert padded_memory.name == "tiny_ours_vs_padded_trainer_peak_memory" and padded_memory.aim is None
    assert (padded_memory.ratio, trl_memory.ratio) == (0.25, 0.5)
    assert "ours: " in trl.note and "peak 1 MiB" in trl.note and "peak 2 MiB" in trl.note
    # MFU: context on CPU and on any shape but the 8B on a GPU.
    assert mfu.name == "tiny_ours_mfu" and mfu.ratio == pytest.approx(expected_mfu) and mfu.aim is None


def test_mfu_is_held_to_its_aim_on_the_8b_shape_on_a_gpu_only() -> None:
    work = Work((3, 1), head_rows=4)
    runs = {name: [Run(1.0, 4, work)] for name in ("ours", "padded Trainer", "TRL SFTTrainer")}
    on_gpu = shape_results("llama_3_1_8b", LLAMA_3_1_8B, runs, peak=1e12, peak_source="test", precision="bf16",
                           gpu=True)  # fmt: skip
    # No peak memory measured: no memory ratio, "n/a" in the notes.
    assert [r.name for r in on_gpu] == [f"llama_3_1_8b_ours_{figure}" for figure in (
        "vs_padded_trainer_tokens_per_s", "vs_trl_sft_tokens_per_s", "mfu")]  # fmt: skip
    assert on_gpu[-1].aim == Aim(">=", 0.40) and "peak n/a" in on_gpu[0].note
    on_cpu = shape_results("llama_3_1_8b", LLAMA_3_1_8B, runs, peak=1e12, peak_source="test", precision="fp32")
    cut = shape_results("x", LLAMA_3_1_8B.with_layers(1), runs, peak=1e12, peak_source="t", precision="bf16", gpu=True)
    assert on_cpu[-1].aim is None and cut[-1].aim is None


def test_the_gpu_peak_comes_from_the_device_name_where_known() -> None:
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3") == gpu_peak_tflops("NVIDIA H200") == 989
    assert gpu_peak_tflops("NVIDIA H100 PCIe") == 756  # not the SXM figure
    assert gpu_peak_tflops("NVIDIA A100-SXM4-80GB") == 312
    assert (gpu_peak_tflops("NVIDIA A10G"), gpu_peak_tflops("NVIDIA L4")) == (125, 121)
    assert gpu_peak_tflops("NVIDIA L40S") is None and gpu_peak_tflops("Tesla T4") is None  # unknown: --peak-tflops


def test_peak_memory_on_cpu_is_the_growth_of_the_resident_peak_over_the_block() -> None:
    with measuring(cuda=False) as peak:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    if not Path("/proc/self/clear_refs").exists():
        assert peak.bytes is None and mib(peak.bytes) == "n/a"
        return
    assert peak.bytes is not None and 60 * 2**20 <= peak.bytes < 200 * 2**20, mib(peak.bytes)
