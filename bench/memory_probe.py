"""Peak memory of one LoRA training step, measured: what the memory model (trainer_image/llmt_trainer/memory.py) is
calibrated against and tested with.

`LiveBytes` is a TorchDispatchMode that follows every tensor storage created while it is active and frees it when
the storage is garbage collected (a weak reference's callback): its `peak` is the most tensor memory alive at
once, as a GPU's caching allocator would have to hold it (less the allocator's rounding and fragmentation, which
the memory model's fixed overhead covers). It measures on the CPU what a GPU run of the same shapes allocates,
with no GPU: the same autograd graph saves the same tensors.

`measure_step` builds a decoder from a real model's config (its widths, heads and vocabulary; `layers` of them),
adds the trainer's LoRA adapter, and runs the trainer's own step (loss.loss_over_targets over one packed row,
backward, AdamW) on random tokens: the weights and the row's activations are what is measured, from the
model's creation to the end of the optimizer step.
"""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    """The bytes of tensor storage alive, and their peak, counting storages created inside the mode and any
    registered with `track` (the model's parameters, made before)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: dict[int, int] = {}  # storage id -> bytes

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._seen or storage.nbytes() == 0 or tensor.device.type == "meta":
            return
        self._seen[key] = storage.nbytes()
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return out


@dataclass(frozen=True)
class Measured:
    peak_bytes: int
    weights_bytes: int  # the model's parameters and buffers, adapter included, before the step


def build_model(config: dict[str, Any], layers: int, dtype: torch.dtype, lora_r: int, checkpointing: bool) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    cfg = AutoConfig.for_model(**{**config, "num_hidden_layers": layers, "use_cache": False})
    cfg._attn_implementation = "sdpa"
    with no_init_weights():  # random init of a 150k-token embedding takes longer than the step; values don't matter
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.tie_weights()  # skipped with the init: a tied output layer shares the embedding's storage again
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-0.02, 0.02)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    adapter = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, target_modules="all-linear",
                         task_type="CAUSAL_LM")
    return get_peft_model(model, adapter)


def measure_step(config: dict[str, Any], *, layers: int, tokens: int, label_share: float = 0.5,
                 dtype: torch.dtype = torch.float32, lora_r: int = 8, checkpointing: bool = False,
                 chunk_tokens: int = 1024, examples: int = 4) -> Measured:
    """Peak tensor memory of building the model and one training step over a packed row of `tokens` tokens made
    of `examples` equal examples, `label_share` of the positions carrying a label."""
    from trainer_image.llmt_trainer.loss import loss_over_targets

    gc.collect()
    torch.manual_seed(0)
    tracker = LiveBytes()
    with tracker:
        model = build_model(config, layers, dtype, lora_r, checkpointing)
        model.train()
        gc.collect()
        weights = tracker.peak = tracker.live  # building the model has its own transient peak, not the step's
        vocab = int(config["vocab_size"])
        input_ids = torch.randint(0, vocab, (1, tokens))
        length = tokens // examples
        position_ids = (torch.arange(tokens) % length).unsqueeze(0)
        count = int((tokens - 1) * label_share)
        positions = torch.arange(tokens - 1 - count, tokens - 1)
        targets = input_ids.reshape(-1)[positions + 1]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        result = loss_over_targets(model, input_ids, position_ids, positions, targets, chunk_tokens)
        (result.loss / max(count, 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        peak = tracker.peak
        del model, optimizer, result
    gc.collect()
    return Measured(peak_bytes=peak, weights_bytes=weights)



# The shapes tests/unit/test_memory_model.py checks, as (catalog model, layers, gradient checkpointing).
CALIBRATION = (
    ("Qwen/Qwen2.5-0.5B-Instruct", 2, False),
    ("meta-llama/Llama-3.2-1B-Instruct", 2, True),
    ("mistralai/Mistral-7B-Instruct-v0.3", 1, False),
    ("microsoft/Phi-3.5-mini-instruct", 1, True),
)


def main() -> None:
    """`python -m bench.memory_probe`: measured against predicted step memory (above the weights), fp32, 256
    tokens of which half are labelled, for the calibration shapes."""
    from pathlib import Path

    from services.training.catalog import Catalog
    from trainer_image.llmt_trainer.memory import Architecture, predict

    catalog = Catalog.load(Path(__file__).resolve().parents[1] / "services" / "training" / "catalog.json")
    tokens, share = 256, 0.5
    print(f"{'model':40} layers ckpt  measured MiB  predicted MiB  ratio")
    for model_id, layers, checkpointing in CALIBRATION:
        entry = catalog.model(model_id)
        assert entry is not None
        measured = measure_step(entry.architecture, layers=layers, tokens=tokens, label_share=share,
                                checkpointing=checkpointing)
        predicted = predict(Architecture.from_config(entry.architecture), tokens, dtype_bytes=4, layers=layers,
                            gradient_checkpointing=checkpointing, overhead=0,
                            labelled_tokens=int((tokens - 1) * share))
        step = measured.peak_bytes - measured.weights_bytes
        guess = predicted.total - predicted.weights
        print(f"{model_id:40} {layers:6} {checkpointing!s:5} {step / 2**20:13.1f} {guess / 2**20:14.1f} "
              f"{guess / step:6.2f}", flush=True)


if __name__ == "__main__":
    main()
