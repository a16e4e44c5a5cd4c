"""The memory model against measured peaks: one real training step (the trainer's own loss, backward and AdamW) on
each of several catalog models' real shapes (widths, heads, vocabulary from catalog.json, 1-2 layers), its live
tensor bytes followed by bench/memory_probe.py, compared with memory.predict for the same row (within 25%).

What is compared is the step's own memory, the peak above the weights (activations, logits, adapter gradients and
optimizer state): that is what the formula models; the weights are plain arithmetic and would hide its errors.
Measured in fp32 (what a CPU trains in; bf16 on this CPU is about 25 times slower, see memory.FP32_NORM_TERMS).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.memory_probe import measure_step
from services.training.catalog import Catalog
from trainer_image.llmt_trainer.memory import (
    GIB,
    LOGIT_BYTES,
    LOSS_CHUNK_BYTES,
    Architecture,
    auto_tokens_per_step,
    loss_chunk_tokens,
    method_compute_factor,
    min_row_tokens,
    plan,
    predict,
    sequences_per_example,
)

CATALOG = Catalog.load(Path(__file__).resolve().parents[2] / "services" / "training" / "catalog.json")
TOKENS = 256
LABEL_SHARE = 0.5


def _config(model_id: str) -> dict[str, object]:
    model = CATALOG.model(model_id)
    assert model is not None
    return model.architecture


@pytest.mark.parametrize(("model_id", "layers", "checkpointing"), [
    ("Qwen/Qwen2.5-0.5B-Instruct", 2, False),  # a 152k vocabulary: the logits dominate
    ("meta-llama/Llama-3.2-1B-Instruct", 2, True),
    ("mistralai/Mistral-7B-Instruct-v0.3", 1, False),  # a 7B layer and a small vocabulary: the layer dominates
    ("microsoft/Phi-3.5-mini-instruct", 1, True),  # fused projections, and the rebuilt layer outweighs the logits
])
def test_prediction_is_within_a_quarter_of_the_measured_peak(model_id: str, layers: int,
                                                             checkpointing: bool) -> None:
    config = _config(model_id)
    measured = measure_step(config, layers=layers, tokens=TOKENS, label_share=LABEL_SHARE, checkpointing=checkpointing,
                            dtype=torch.float32)
    arch = Architecture.from_config(config)
    predicted = predict(arch, TOKENS, dtype_bytes=4, gradient_checkpointing=checkpointing, layers=layers,
                        overhead=0, labelled_tokens=int((TOKENS - 1) * LABEL_SHARE))
    step_measured = measured.peak_bytes - measured.weights_bytes
    step_predicted = predicted.total - predicted.weights
    assert predicted.weights == pytest.approx(measured.weights_bytes, rel=0.02)
    assert step_predicted == pytest.approx(step_measured, rel=0.25), (
        f"{model_id}: predicted {step_predicted / 2**20:.1f} MiB, measured {step_measured / 2**20:.1f} MiB")


def test_checkpointing_is_chosen_only_when_rows_do_not_fit_without_it() -> None:
    qwen7 = Architecture.from_config(_config("Qwen/Qwen2.5-7B-Instruct"))
    small = Architecture.from_config(_config("Qwen/Qwen2.5-0.5B-Instruct"))
    a10g = 24 * GIB
    roomy = plan(small, a10g, 2048)
    assert roomy is not None and not roomy.gradient_checkpointing and roomy.row_tokens >= 2048
    tight = plan(qwen7, a10g, 2048)
    assert tight is not None and tight.gradient_checkpointing
    assert tight.predicted.total <= a10g
    assert plan(qwen7, a10g, 2048, gradient_checkpointing=False) is None
    assert plan(qwen7, 16 * GIB, 2048, dtype_bytes=4) is None  # a V100 without bf16
    assert plan(qwen7, 16 * GIB, 2048, load_in_4bit=True) is not None  # QLoRA does


def test_the_vocabulary_and_the_row_set_the_logits_and_activations() -> None:
    qwen = Architecture.from_config(_config("Qwen/Qwen2.5-0.5B-Instruct"))
    short, long = predict(qwen, 1024), predict(qwen, 4096)
    assert long.activations == 4 * short.activations  # linear in the row's tokens
    assert long.logits == short.logits  # the output layer runs one bounded chunk at a time
    # The chunk is sized by the vocabulary, so a 152k-word model's logits stay as bounded as a 33k-word one's.
    mistral = Architecture.from_config(_config("mistralai/Mistral-7B-Instruct-v0.3"))
    assert loss_chunk_tokens(qwen.vocab_size) < loss_chunk_tokens(mistral.vocab_size)
    assert max(predict(mistral, 4096).logits, long.logits) <= 3 * LOSS_CHUNK_BYTES
    assert predict(qwen, 64, dtype_bytes=4).logits == 64 * qwen.vocab_size * LOGIT_BYTES  # a short row: all at once
    with_ckpt = predict(qwen, 4096, gradient_checkpointing=True)
    assert with_ckpt.activations < long.activations / 4


def test_auto_tokens_per_step_gives_small_files_several_steps() -> None:
    assert auto_tokens_per_step(800) == 100  # 20 short examples: 8 steps an epoch
    assert auto_tokens_per_step(10**9) == 16_384
    assert auto_tokens_per_step(0) == 1


def test_a_dpo_pair_is_two_sequences_in_one_row_at_four_thirds_of_the_compute() -> None:
    assert sequences_per_example("supervised") == 1 and sequences_per_example("dpo") == 2
    assert min_row_tokens(2048) == min_row_tokens(2048, "supervised") == 2048
    assert min_row_tokens(2048, "dpo") == 4096
    assert method_compute_factor("supervised") == 1.0
    assert method_compute_factor("dpo") == pytest.approx(4 / 3)  # policy forward + backward (3) + reference (1)
    with pytest.raises(ValueError, match="unknown training method 'ppo'"):
        min_row_tokens(2048, "ppo")
    # The trainer plans a DPO row from min_row_tokens: a pair of max_seq_length sequences must fit, which can
    # need checkpointing where one sequence does not.
    qwen7 = Architecture.from_config(_config("Qwen/Qwen2.5-7B-Instruct"))
    sft = plan(qwen7, 24 * GIB, min_row_tokens(4096))
    dpo = plan(qwen7, 24 * GIB, min_row_tokens(4096, "dpo"))
    assert sft is not None and sft.row_tokens >= 4096 and dpo is not None and dpo.row_tokens >= 8192
