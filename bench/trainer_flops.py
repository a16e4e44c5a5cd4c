"""FLOPs of LoRA fine-tuning, counted from a model's shape: the accounting behind bench.trainer's MFU and HFU.

Pure functions of the shape and of what a trainer computed; unit-tested against a hand computation.

Per trained token, with N the decoder's linear weights (frozen), P the LoRA adapter's parameters, H the hidden
size, V the vocabulary:
- frozen linear layers: 4N. The forward is 2N (a multiply and an add per weight); the backward computes only the
  gradient with respect to the activations (another 2N), never the weights' own gradient (they are frozen), so the
  usual 6N of full training becomes 4N. (Layer 0's frozen projections do not even need that, since nothing before
  them trains; that sliver is left in, so the figure is "about".)
- the adapter: 6P, as in full training (forward, activation gradient and weight gradient).
- attention's two matmuls, QK^T and AV: per example of L tokens, causal, L(L+1)/2 query-key pairs, each costing
  2 x (heads x head_dim) FLOPs per matmul: 4 x pairs x q_dim forward, twice that backward (dQ and dK, dA and dV),
  so 12 x pairs x q_dim per layer. Counted per example, not per packed row: a packed row's examples do not attend
  to each other, and a padded position attends to nothing useful. (On CPU, SDPA with an explicit block mask does
  compute the whole row's square; that hardware cost is in neither figure.)
- the output layer (V x H, frozen, tied or not): 4VH per position that goes through it (forward 2VH, activation
  gradient 2VH).

What "the positions that go through the output layer" are differs by trainer, and so the figures say which:
- MFU counts the work each side actually does, for the real tokens only: the decoder over every real token, and
  the output layer over the positions that side computes logits for (ours: only the positions whose next token is
  a target; a plain Trainer, or TRL on CPU: every position). Padding is counted in
  neither MFU nor HFU: it is the waste the comparison is about.
- HFU (hardware FLOPs) adds what is computed twice: with gradient checkpointing, the decoder's forward again in the
  backward pass (2N + 2P + attention's forward per token); with a checkpointed or chunked loss, the output layer's
  forward again (2VH per recomputed position).
- "model FLOPs" like-for-like (`like_for_like`): every real token through the output layer, no recomputation; the
  same figure for every side, so its ratio is the tokens/s ratio.
MFU = counted FLOPs per second / peak FLOP/s; HFU = hardware FLOPs per second / the same peak.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Llama 3's rope scaling (from the models' config.json on the Hub); it changes no FLOP, only the config's validity.
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
               "original_max_position_embeddings": 8192}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder: what its FLOPs and parameters depend on."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    rope: dict[str, Any] | None = None
    max_positions: int = 2048
    full_layers: int = 0  # the real model's depth when `layers` is fewer (0: `layers` is the real depth)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def with_layers(self, layers: int) -> Shape:
        """The same widths and vocabulary at another depth (on CPU, fewer layers than the real model)."""
        return dataclasses.replace(self, layers=layers, full_layers=self.full_layers or self.layers)

    @property
    def label(self) -> str:
        depth = f"{self.layers} of its {self.full_layers} layers" if self.full_layers else f"{self.layers} layers"
        return f"{self.name} ({depth})"

    def projections(self) -> list[tuple[int, int]]:
        """(in, out) of one decoder layer's linear layers: q, k, v, o, gate, up, down."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def linear_parameters(self) -> int:
        """N: the decoder layers' linear weights (what LoRA "all-linear" adapts; embeddings and output excluded)."""
        return self.layers * sum(a * b for a, b in self.projections())

    def parameters(self) -> int:
        """All parameters, as the model counts them: embeddings, layers (with their two norms), final norm, and the
        output layer unless it is tied to the embeddings."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.linear_parameters() + self.layers * 2 * self.hidden + self.hidden

    def lora_parameters(self, r: int) -> int:
        """P: a rank-r adapter on every linear layer of the decoder (A: in x r, B: r x out)."""
        return self.layers * sum(r * (a + b) for a, b in self.projections())

    def config(self) -> dict[str, Any]:
        """LlamaConfig keyword arguments for this shape (random weights are built from it: no download)."""
        values: dict[str, Any] = {
            "hidden_size": self.hidden, "intermediate_size": self.intermediate, "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "vocab_size": self.vocab, "tie_word_embeddings": self.tied_embeddings,
            "max_position_embeddings": self.max_positions, "rms_norm_eps": 1e-5,
        }  # fmt: skip
        if self.rope:
            values["rope_parameters"] = dict(self.rope)
        return values


# meta-llama/Llama-3.2-1B(-Instruct), config.json: 1,235,814,400 parameters (the catalog's figure).
LLAMA_3_2_1B = Shape("Llama-3.2-1B", hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256,
                     tied_embeddings=True, rope={**LLAMA3_ROPE, "factor": 32.0}, max_positions=131072)  # fmt: skip
# meta-llama/Llama-3.1-8B(-Instruct), config.json: 8,030,261,248 parameters.
LLAMA_3_1_8B = Shape("Llama-3.1-8B", hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256,
                     tied_embeddings=False, rope={**LLAMA3_ROPE, "factor": 8.0}, max_positions=131072)  # fmt: skip


@dataclass(frozen=True)
class Work:
    """What one trainer computed over a run, beyond the decoder over every real token once."""

    lengths: tuple[int, ...]  # real tokens of each example (attention is per example)
    head_rows: int  # positions whose logits were computed in the forward pass (real tokens only)
    head_rows_recomputed: int = 0  # of those, computed again in the backward pass (a checkpointed loss)
    layers_recomputed: float = 0.0  # share of the tokens whose decoder forward ran again (gradient checkpointing)

    @property
    def tokens(self) -> int:
        return sum(self.lengths)


@dataclass(frozen=True)
class Flops:
    counted: float  # the work done once: MFU's numerator
    hardware: float  # counted + recomputation: HFU's numerator


def training_flops(shape: Shape, work: Work, lora_r: int) -> Flops:
    """FLOPs of one pass of LoRA training over `work` (see the module docstring for each term)."""
    tokens = work.tokens
    pairs = sum(n * (n + 1) // 2 for n in work.lengths)
    q_dim = shape.heads * shape.head_dim
    n, p, head = shape.linear_parameters(), shape.lora_parameters(lora_r), shape.vocab * shape.hidden
    attention_forward = shape.layers * 4 * pairs * q_dim
    counted = (4 * n + 6 * p) * tokens + 3 * attention_forward + 4 * head * work.head_rows
    recomputed = work.layers_recomputed * ((2 * n + 2 * p) * tokens + attention_forward)
    recomputed += 2 * head * work.head_rows_recomputed
    return Flops(counted=float(counted), hardware=float(counted + recomputed))


def like_for_like(shape: Shape, lengths: Sequence[int], lora_r: int) -> float:
    """Model FLOPs of training on `lengths`, the same for every trainer: every token through the output layer."""
    return training_flops(shape, Work(tuple(lengths), head_rows=sum(lengths)), lora_r).counted


# Dense bf16 peaks (no sparsity) from NVIDIA's datasheets, in TFLOPS, for --gpu's MFU when --peak-tflops is not given.
# Looked up by the words of torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"), most
# specific first: an H100 PCIe card is slower than the SXM one the plain "H100" means.
GPU_PEAK_TFLOPS: tuple[tuple[frozenset[str], float], ...] = (
    (frozenset({"H100", "PCIE"}), 756.0),
    (frozenset({"H100", "NVL"}), 835.0),
    (frozenset({"H100"}), 989.0),  # SXM
    (frozenset({"H200"}), 989.0),
    (frozenset({"A100"}), 312.0),
    (frozenset({"A10G"}), 125.0),  # ml.g5
    (frozenset({"L4"}), 121.0),
)


def gpu_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of the named GPU, or None where the bench does not know it (pass --peak-tflops)."""
    words = set(re.split(r"[^A-Z0-9]+", device_name.upper()))
    return next((tflops for needed, tflops in GPU_PEAK_TFLOPS if needed <= words), None)
