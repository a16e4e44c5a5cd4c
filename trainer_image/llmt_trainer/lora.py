"""The model that trains: the base model frozen in its own dtype (bf16, or 4-bit for QLoRA), and the LoRA adapter
on it, whose fp32 weights compute in the base's dtype.

The base, plain or 4-bit, is prepared the same way: frozen, and with gradient checkpointing when asked for.
peft's prepare_model_for_kbit_training would also cast every parameter that is not 4-bit (embeddings, lm_head,
norms) to fp32. Nothing here needs that. Frozen weights are never updated, so their precision does not drift;
the models' RMSNorm already normalises in fp32 inside its forward; the loss upcasts the logits it needs. And the
cast costs memory twice: Qwen2.5-7B's untied 152k-token embeddings and lm_head grow from 2.0 to 4.1 GiB, and an fp32
norm weight turns its bf16 input into an fp32 output, doubling the residual stream's activations. So nothing is
upcast.

The adapter: peft keeps LoRA weights in fp32 when the base is bf16 (get_peft_model's autocast_adapter_dtype). They
stay fp32: they are the master weights that AdamW updates (fp32 moments too), since in bf16 an update smaller than
1/256 of the weight would be rounded away. But peft also casts each adapted layer's input to fp32 and runs A and B
in fp32: slower matmuls, and an fp32 copy of every LoRA input kept for the backward pass. Instead, with peft's input
cast turned off, A and B multiply in their input's dtype (the base's, bf16) with their fp32 weight cast for the
product, as torch.autocast would; the cast's backward brings the gradient to the fp32 weight. It is bound to the
A and B layers themselves, not to one model-level forward under autocast, so it holds whichever way the model is
called (loss.py runs the decoder and the output layer separately). Only when the base is not fp32 (bf16 on a GPU;
on the CPU everything is fp32 and nothing changes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import set_seed

from .errors import HyperparameterError
from .hyperparameters import Hyperparameters


def prepare_base_model(model: Any, gradient_checkpointing: bool) -> None:
    """Freeze every base weight, in its own dtype; optionally recompute activations in the backward pass."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if gradient_checkpointing:
        # transformers 5 renamed it activation_checkpointing_enable; the old name warns.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # the frozen embeddings' output must carry grad for LoRA


def add_lora_adapter(model: Any, hp: Hyperparameters, dtype: torch.dtype, config: LoraConfig | None = None) -> Any:
    """The PeftModel: LoRA on `hp.target_modules`, fp32 weights computing in `dtype` (see the module's docstring);
    `config`: a starting adapter's own LoRA config instead (adapter_start.py), its weights loaded afterwards."""
    # Seeded right before the adapter is created: that is what makes LoRA's initial weights reproducible.
    set_seed(hp.seed)
    target = hp.target_modules if isinstance(hp.target_modules, str) else list(hp.target_modules)
    config = config or LoraConfig(
        r=hp.lora_r,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=target,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules that the model does not have
        raise HyperparameterError(f"cannot add the LoRA adapter: {exc}") from exc
    if dtype != torch.float32:
        compute_adapters_in_input_dtype(peft_model)
    return peft_model


def compute_adapters_in_input_dtype(peft_model: Any) -> None:
    """Each LoRA A and B multiplies in its input's dtype, the base's (see the module's docstring)."""
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            module.cast_input_dtype_enabled = False
            for adapter in (*module.lora_A.values(), *module.lora_B.values()):
                if type(adapter) is torch.nn.Linear:
                    adapter.__class__ = LinearInInputDtype  # same parameters and state dict, another forward


class LinearInInputDtype(torch.nn.Linear):
    """A Linear whose product is in its input's dtype, its weight (fp32 master weights) cast for it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)
