"""The memory model of LoRA and QLoRA training: how much GPU (or host) memory one training pass over a packed row
of T tokens needs, and from it the settings a model fits with. One module, used in three places: the catalog's
fit and the estimate (services/training/fit.py, estimates.py) and the trainer's own choices (loop and job). Pure
Python: the services import it without torch.

    peak = weights + adapter + activations + logits + mask + overhead

    weights      parameters x bytes: 2 in bf16 (4 in fp32, on a GPU without bf16 or on a CPU). With QLoRA the
                 decoder layers' linear weights take NF4_BYTES (4 bits plus double-quantised scales) and the
                 embeddings, output layer and norms stay in bf16.
    adapter      LoRA parameters x 16 bytes: fp32 weights, their gradients and AdamW's two moments.
    activations  without gradient checkpointing: layers x T x per_layer, what autograd saves in one decoder layer
                 for each token, counted from the module structure in elements and calibrated (ACTIVATION_SCALE)
                 against measured peaks:
                     per_layer = bytes x (HIDDEN_TERMS x h + INTERMEDIATE_TERMS x i + ATTENTION_TERMS x q
                                          + KV_TERMS x kv) + FP32_NORM_TERMS x 4 x h (bf16 only)
                 with h the hidden size, i the MLP width, q = heads x head_dim and kv = kv_heads x head_dim.
                 With gradient checkpointing only each layer's input stays (layers x T x h x bytes) and one
                 layer's activations are rebuilt at a time in the backward pass (T x per_layer, plus the
                 gradients of its activations, BACKWARD_TERMS x bytes x (h + i) per token), never alive together
                 with the logits: the larger of the two counts.
    logits       the loss (loss.py) runs the output layer over at most loss_chunk_tokens(vocab) labelled tokens
                 at a time: chunk x vocab x (LOGIT_BYTES + bytes in bf16), the chunk's fp32 logits (made into
                 probabilities in place) and in bf16 the head's output and the probabilities' bf16 copy.
                 Vocabulary size sets the chunk: Qwen2.5's 152k words take 441 tokens a chunk, Mistral's 33k 2,048.
    mask         with sdpa, packed rows get a dense T x T boolean attention mask from transformers: T^2 bytes; 0
                 with flex attention or flash-attention's varlen (dense_mask=False: trainer's fast_path.py), which
                 take the examples' bounds from the position ids and build no such mask.
    overhead     OVERHEAD_BYTES: the CUDA context, cuBLAS workspaces and the caching allocator's slack.

Several processes (`shards`, the world size: distributed_plan): data parallel ("ddp"), each GPU holds all of the
above. Sharded ("fsdp", torch's fully_shard over the decoder layers), each GPU holds weights / shards and
adapter / shards, plus the whole weights of FSDP_GATHERED_LAYERS layers (the one running, the next prefetched);
activations, logits and mask are per row, as before.

Training methods (hyperparameter `method`): everything above is per row and holds for both. DPO (dpo.py) packs
a pair as one unit, its chosen and rejected sequences in the same row, so a row holds at least
min_row_tokens(max_seq_length, "dpo") = 2 x max_seq_length tokens, and a pair's tokens are both sequences'. The
reference's forward pass runs under no_grad and keeps nothing for the backward pass: it adds no peak beyond the
policy's pass. Compute: the policy's forward and backward (3 forward-equivalents per token) plus the reference's
forward (1) make DPO 4/3 of SFT's compute per token (method_compute_factor); a pair's tokens count both sequences
(sequences_per_example).

Calibration (bench/memory_probe.py measures the live tensor bytes of one real training step on the CPU, the same
autograd graph a GPU runs, with each catalog model's real widths, heads and vocabulary and 1-2 layers):
tests/unit/test_memory_model.py compares this formula with those measurements for several shapes, within 25%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIB = 2**30
# Counted from what autograd saves per token in a Llama-style decoder layer with LoRA (dropout > 0) on every
# linear layer: the layer input and the attention residual (2h), the dropout output and mask feeding each of the
# five LoRA A matrices that read h-wide inputs (5 x 1.25h), q, k, v after RoPE, the attention output and its
# reshaped copy (3q + 2kv), the o_proj LoRA input (1.25q), and in the MLP gate, up, SiLU(gate) and the product
# with the down_proj LoRA input (4i + 1.25i).
HIDDEN_TERMS = 8.25
INTERMEDIATE_TERMS = 5.25
ATTENTION_TERMS = 4.25
KV_TERMS = 2.0
# While a rebuilt layer runs backward, the gradients of its activations are alive beside it (h- and i-wide).
BACKWARD_TERMS = 2.0
# RMSNorm computes in fp32: in bf16 both norms keep fp32 copies of their input (and the attention and RoPE a few
# fp32 values more); calibrated on the one bf16 measurement (Qwen2.5-0.5B's shape, 1 layer: bf16 on this CPU is
# about 25x slower than fp32, too slow for the test suite).
FP32_NORM_TERMS = 6.0
ACTIVATION_SCALE = 1.0  # measured / counted (see the module docstring); set by the calibration
# Per logit of a loss chunk (loss.py's fused path: the loss and its gradient made in the forward pass, nothing of
# the logits kept for the backward): the chunk's fp32 logits, turned into probabilities in place (measured: 3.8
# bytes a logit in fp32), plus in bf16 the head's bf16 output before the upcast and the bf16 copy of the
# probabilities that multiplies the weight (counted, not measured: see FP32_NORM_TERMS).
LOGIT_BYTES = 4
OVERHEAD_BYTES = int(1.0 * GIB)
NF4_BYTES = 0.5 + 0.0625  # 4-bit weights plus double-quantised block scales, bitsandbytes' NF4
ADAPTER_BYTES = 16  # fp32 weight, gradient and two AdamW moments per LoRA parameter
LOSS_CHUNK_BYTES = 256 * 2**20  # the fp32 logits of one loss chunk stay under this
MIN_LOSS_CHUNK = 128
# "auto" batch size: an optimizer step of this many tokens at most, and at least AUTO_MIN_STEPS_PER_EPOCH steps
# an epoch on a small file (20 short examples still make several steps, so the loss can move).
AUTO_MAX_TOKENS_PER_STEP = 16_384
AUTO_MIN_STEPS_PER_EPOCH = 8
# The longest row "auto" packs. Rows are packed with a dense block-diagonal causal mask, so attention works on
# every pair of tokens in the row, other examples' included: a row's wasted attention grows with its length
# while the linear layers' work per token is fixed (about 6 x hidden x row / 4 of it). "auto" rows are long
# enough to keep a GPU busy and short enough that this waste stays under ATTENTION_WASTE of the linear layers'.
AUTO_MAX_ROW_TOKENS = 16_384
AUTO_ROW_CAP = 4096
ATTENTION_WASTE = 0.25
# The share of a CPU host's memory a plan takes: the container shares the host with the data loader, the tokenizer
# and (locally) the emulator's other jobs.
CPU_MEMORY_SHARE = 0.5
# Of the device memory, what the plan may use (the rest absorbs what the model does not count).
USABLE_SHARE = 0.92
# FSDP holds the whole weights of the layer running and of the next one (prefetched) besides its own shard.
FSDP_GATHERED_LAYERS = 2


METHODS = ("supervised", "dpo")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; expected one of {', '.join(METHODS)}")


def sequences_per_example(method: str) -> int:
    """How many token sequences one training example is: a DPO pair is two (chosen and rejected), in one row."""
    _check_method(method)
    return 2 if method == "dpo" else 1


def min_row_tokens(max_seq_length: int, method: str = "supervised") -> int:
    """The shortest row a plan may choose: one whole example (a DPO pair: both its sequences)."""
    return max_seq_length * sequences_per_example(method)


def method_compute_factor(method: str) -> float:
    """Compute per trained token relative to supervised training (forward + backward = 3 forward passes): DPO adds
    the reference model's forward pass over the same tokens, 4/3. Trained tokens of a pair count both sequences."""
    _check_method(method)
    return 4 / 3 if method == "dpo" else 1.0


@dataclass(frozen=True)
class Architecture:
    """A decoder's shape, from its Hugging Face config.json."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )

    @property
    def q_width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer, as "all-linear" LoRA wraps them."""
        h, i, q, kv = self.hidden_size, self.intermediate_size, self.q_width, self.kv_width
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def layer_parameters(self) -> int:
        return sum(a * b for a, b in self.layer_linears()) + 2 * self.hidden_size

    def embedding_parameters(self) -> int:
        tables = 1 if self.tie_word_embeddings else 2
        return tables * self.vocab_size * self.hidden_size

    def parameters(self) -> int:
        return self.num_layers * self.layer_parameters() + self.embedding_parameters() + self.hidden_size

    def lora_parameters(self, rank: int) -> int:
        return self.num_layers * rank * sum(a + b for a, b in self.layer_linears())


@dataclass(frozen=True)
class Breakdown:
    weights: int
    adapter: int
    activations: int
    logits: int
    mask: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.adapter + self.activations + self.logits + self.mask + self.overhead

    def as_gib(self) -> dict[str, float]:
        parts = {name: getattr(self, name) for name in ("weights", "adapter", "activations", "logits", "mask",
                                                        "overhead")}
        return {name: round(value / GIB, 2) for name, value in {**parts, "total": self.total}.items()}


def loss_chunk_tokens(vocab_size: int) -> int:
    """How many labelled tokens go through the output layer at once: the fp32 logits under LOSS_CHUNK_BYTES."""
    return max(MIN_LOSS_CHUNK, LOSS_CHUNK_BYTES // (4 * max(vocab_size, 1)))


def activation_bytes_per_token(arch: Architecture, dtype_bytes: int) -> float:
    """What one decoder layer keeps for the backward pass, per token, without gradient checkpointing."""
    counted = dtype_bytes * (HIDDEN_TERMS * arch.hidden_size + INTERMEDIATE_TERMS * arch.intermediate_size
                             + ATTENTION_TERMS * arch.q_width + KV_TERMS * arch.kv_width)
    if dtype_bytes < 4:
        counted += FP32_NORM_TERMS * 4 * arch.hidden_size
    return ACTIVATION_SCALE * counted


def predict(arch: Architecture, row_tokens: int, *, dtype_bytes: int = 2, load_in_4bit: bool = False,
            gradient_checkpointing: bool = False, lora_rank: int = 8, layers: int | None = None,
            overhead: int = OVERHEAD_BYTES, labelled_tokens: int | None = None, dense_mask: bool = True,
            shards: int = 1) -> Breakdown:
    """Peak memory of one training pass over a row of `row_tokens` tokens, `labelled_tokens` of them (all, unless
    said) going through the output layer (`layers`: fewer than the model's, as the calibration measures);
    `dense_mask`: whether the attention gets a dense T x T mask (sdpa) or none (flex, flash-attention varlen);
    `shards`: the processes FSDP shards the weights and the adapter over (1: not sharded)."""
    n_layers = arch.num_layers if layers is None else layers
    layer_params = n_layers * arch.layer_parameters()
    other_params = arch.embedding_parameters() + arch.hidden_size
    if load_in_4bit:
        weights = int(layer_params * NF4_BYTES + other_params * 2)
    else:
        weights = (layer_params + other_params) * dtype_bytes
    adapter = n_layers * lora_rank * sum(a + b for a, b in arch.layer_linears()) * ADAPTER_BYTES
    if shards > 1:
        layer_bytes = arch.layer_parameters() * (NF4_BYTES if load_in_4bit else dtype_bytes)
        weights = int(weights / shards + min(FSDP_GATHERED_LAYERS, n_layers) * layer_bytes)
        adapter = adapter // shards
    per_layer = activation_bytes_per_token(arch, dtype_bytes)
    chunk = min(loss_chunk_tokens(arch.vocab_size), row_tokens if labelled_tokens is None else labelled_tokens)
    logits = chunk * arch.vocab_size * (LOGIT_BYTES + (dtype_bytes if dtype_bytes < 4 else 0))
    if gradient_checkpointing:
        # Each layer's input stays; one layer is rebuilt at a time in the backward pass, after the loss chunks
        # are done, so the rebuilt layer and the logits are never alive together: the larger of the two counts.
        rebuilt = row_tokens * (per_layer + BACKWARD_TERMS * dtype_bytes * (arch.hidden_size + arch.intermediate_size))
        activations = row_tokens * n_layers * arch.hidden_size * dtype_bytes + max(0, rebuilt - logits)
    else:
        activations = row_tokens * n_layers * per_layer
    return Breakdown(weights=int(weights), adapter=int(adapter), activations=int(activations), logits=int(logits),
                     mask=row_tokens * row_tokens if dense_mask else 0, overhead=overhead)


def max_row_tokens(arch: Architecture, capacity_bytes: float, **settings: Any) -> int:
    """The longest row that fits `capacity_bytes` with these settings (0: not even one token)."""
    low, high = 0, AUTO_MAX_ROW_TOKENS * 8
    while low < high:
        middle = (low + high + 1) // 2
        if predict(arch, middle, **settings).total <= capacity_bytes:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class Plan:
    """What the trainer does on a device: checkpointing or not, and the token budget of a row."""

    gradient_checkpointing: bool
    row_tokens: int
    predicted: Breakdown

    def as_dict(self) -> dict[str, Any]:
        return {"gradient_checkpointing": self.gradient_checkpointing, "micro_batch_tokens": self.row_tokens,
                "predicted_peak_gib": round(self.predicted.total / GIB, 2), "breakdown_gib": self.predicted.as_gib()}


def plan(arch: Architecture, capacity_bytes: float, max_seq_length: int, *, dtype_bytes: int = 2,
         load_in_4bit: bool = False, lora_rank: int = 8, gradient_checkpointing: bool | None = None,
         row_tokens: int | None = None, dense_mask: bool = True, shards: int = 1) -> Plan | None:
    """The settings that fit `capacity_bytes` (the device's memory): a row holds at least one max_seq_length
    example. Checkpointing stays off when the rows fit without it ("auto": None), since it costs a forward pass
    again; a row is as long as memory allows, up to AUTO_MAX_ROW_TOKENS (or `row_tokens` when given). None: even
    one max_seq_length example does not fit."""
    usable = capacity_bytes * USABLE_SHARE
    choices = [False, True] if gradient_checkpointing is None else [gradient_checkpointing]
    for checkpointing in choices:
        settings: dict[str, Any] = {"dtype_bytes": dtype_bytes, "load_in_4bit": load_in_4bit, "lora_rank": lora_rank,
                    "gradient_checkpointing": checkpointing, "dense_mask": dense_mask, "shards": shards}
        longest = max_row_tokens(arch, usable, **settings)
        if longest < max_seq_length:
            continue
        wanted = row_tokens if row_tokens else auto_row_tokens(arch, max_seq_length)
        chosen = max(max_seq_length, min(wanted, longest))
        return Plan(checkpointing, chosen, predict(arch, chosen, **settings))
    return None


def auto_row_tokens(arch: Architecture, max_seq_length: int) -> int:
    """"auto" micro_batch_tokens before memory has its say: at least one max_seq_length example."""
    return max(max_seq_length, min(AUTO_ROW_CAP, int(6 * arch.hidden_size * ATTENTION_WASTE)))


def auto_tokens_per_step(total_tokens: int) -> int:
    """"auto" batch size as tokens per optimizer step: at least AUTO_MIN_STEPS_PER_EPOCH steps an epoch, at most
    AUTO_MAX_TOKENS_PER_STEP tokens a step."""
    return max(1, min(AUTO_MAX_TOKENS_PER_STEP, math.ceil(total_tokens / AUTO_MIN_STEPS_PER_EPOCH)))


def distributed_plan(arch: Architecture, gpu_memory_bytes: float, gpus_per_host: int, hosts: int,
                     max_seq_length: int, *, dtype_bytes: int = 2, lora_rank: int = 8,
                     gradient_checkpointing: bool | None = None, row_tokens: int | None = None,
                     load_in_4bit: bool | None = None, **settings: Any) -> tuple[str, Plan] | None:
    """How a job runs on `hosts` x `gpus_per_host` GPUs of `gpu_memory_bytes` each (one process per GPU), and each
    process's plan: "ddp" (data parallel) where the model fits one GPU in bf16; else "fsdp" (the weights and the
    adapter sharded over all the processes); only where even that does not fit, "fsdp_qlora" (sharded and 4-bit),
    or on a single GPU "qlora" (4-bit, not sharded). None: nothing fits. `load_in_4bit` True or False forces that
    choice (None: bf16 first, 4-bit where it must); `settings`: plan()'s other settings. What the trainer does
    with the plan: device_plan.py; the service calls this to decide the instance count and the hyperparameters."""
    world = max(1, gpus_per_host) * max(1, hosts)
    settings.update(dtype_bytes=dtype_bytes, lora_rank=lora_rank, row_tokens=row_tokens,
                    gradient_checkpointing=gradient_checkpointing)
    choices = [(False, 1, "ddp"), (False, world, "fsdp"), (True, 1, "qlora" if world == 1 else "ddp"),
               (True, world, "fsdp_qlora")]
    for four_bit, shards, strategy in choices:
        if (load_in_4bit is not None and four_bit != load_in_4bit) or (shards > 1 and world == 1):
            continue
        if four_bit and shards == 1 and world > 1 and load_in_4bit is None:
            continue  # several GPUs: sharded bf16 and sharded 4-bit come before 4-bit copies on every GPU
        chosen = plan(arch, gpu_memory_bytes, max_seq_length, load_in_4bit=four_bit, shards=shards, **settings)
        if chosen is not None:
            return strategy, chosen
    return None

