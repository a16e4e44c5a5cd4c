"""The trainer's fast path on a GPU: which attention, loss and kernels a run uses, chosen in one place and reported in
one log line at start. On the CPU every switch is off and training is exactly the plain path.

    attention  Packed rows (packing.py) restart their position ids at each example. transformers 5 turns that into
               per-example attention for each implementation (masking_utils.create_causal_mask,
               find_packed_sequence_indices): "sdpa" and "eager" get a dense T x T block-diagonal causal mask, every
               pair of tokens in the row computed and most of them thrown away; "flex_attention" gets a BlockMask from
               the same mask function (causal within an example, and the same example: exact) built by
               create_block_mask, so flex attention skips every 128 x 128 block that lies wholly outside an example
               and no T x T mask exists; "flash_attention_2" takes the cumulative sequence lengths from the position
               ids (modeling_flash_attention_utils._is_packed_sequence) and runs the varlen kernel, also exact.
               Chosen: flex attention, which is part of torch (nothing more to install; flash_attention_2 needs the
               flash_attn package, built against one CUDA and torch, which the image does not carry: it is taken only
               where flex is not and flash_attn is importable), and whose mask is the same code on the CPU, where the
               equal-loss test runs it (forward only: torch 2.13 has no FlexAttention backward on the CPU). Else
               "sdpa" with its dense mask, as before. memory.py's mask term follows (`dense_mask`).
    loss       loss.py's fused linear + cross-entropy over the labelled tokens only; on CUDA with liger_kernel
               importable, Liger's Triton kernel of the same (loss.liger_loss), else loss.py's own chunked one.
    kernels    Liger's RMSNorm, RoPE and SwiGLU (GeGLU for Gemma), patched into the model's transformers module
               before it is loaded; the output layer and loss stay loss.py's (cross_entropy and
               fused_linear_cross_entropy off: loss.py never asks the model for logits on the fused path).
    autocast   compute_autocast(device, dtype): bf16 autocast around each row's forward pass where the base is
               bf16 (the LoRA weights stay fp32 master weights computing in bf16, lora.py); a no-op in fp32.
    compile    hyperparameter torch_compile: each decoder layer compiled on its own with dynamic shapes (rows vary
               in length), so the model's state dict and the adapter's saved names do not change.

Switches can be turned off for one job with LLMT_FAST_PATH_OFF, a comma-separated list of "flex", "flash", "liger",
"autocast" (e.g. to rule a kernel out when a run's loss differs from an earlier one).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

FAST_PATH_OFF_ENV = "LLMT_FAST_PATH_OFF"
SWITCHES = ("flex", "flash", "liger", "autocast")
DENSE_ATTENTION = ("sdpa", "eager", None)  # None: transformers' default, sdpa

# model_type (config.json) -> liger_kernel.transformers' function that patches that architecture's module. Each is
# called with whichever of rope, rms_norm, swiglu, geglu it accepts set on and its own losses off.
LIGER_KERNEL_FUNCTIONS = {
    "llama": "apply_liger_kernel_to_llama",
    "mistral": "apply_liger_kernel_to_mistral",
    "mixtral": "apply_liger_kernel_to_mixtral",
    "qwen2": "apply_liger_kernel_to_qwen2",
    "qwen3": "apply_liger_kernel_to_qwen3",
    "phi3": "apply_liger_kernel_to_phi3",
    "gemma": "apply_liger_kernel_to_gemma",
    "gemma2": "apply_liger_kernel_to_gemma2",
    "gemma3_text": "apply_liger_kernel_to_gemma3_text",
    "granite": "apply_liger_kernel_to_granite",
    "olmo2": "apply_liger_kernel_to_olmo2",
}
LIGER_KERNEL_SWITCHES = {"rope": True, "rms_norm": True, "swiglu": True, "geglu": True,
                         "cross_entropy": False, "fused_linear_cross_entropy": False}
LOW_PRECISION = (torch.bfloat16, torch.float16)
SHORT_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def switched_off() -> frozenset[str]:
    """The switches LLMT_FAST_PATH_OFF turns off for this job."""
    names = {name.strip().lower() for name in os.environ.get(FAST_PATH_OFF_ENV, "").split(",") if name.strip()}
    return frozenset(names & set(SWITCHES))


@functools.cache
def liger_transformers() -> Any:
    """liger_kernel.transformers, imported once; None where it cannot be (not installed, or no Triton)."""
    try:
        return importlib.import_module("liger_kernel.transformers")
    except Exception as exc:  # an ImportError, or Triton failing to find its GPU or compiler
        if _importable("liger_kernel"):
            log.warning("liger_kernel is installed but cannot be imported (%s): its kernels are not used", exc)
        return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Available:
    """What this process and this model could use: each flag already says no where LLMT_FAST_PATH_OFF says so."""

    flex_attention: bool = False  # torch has FlexAttention and the model's class supports it
    flash_attention: bool = False  # flash_attn is importable and the model's class supports flash_attention_2
    liger: bool = False  # liger_kernel is importable (it needs Triton and CUDA)


def _model_class(config: Any) -> Any:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return None


def detect(config: Any = None) -> Available:
    """What is installed, and what the model's class (from its `config`, when given) supports."""
    off = switched_off()
    unknown = {n.strip().lower() for n in os.environ.get(FAST_PATH_OFF_ENV, "").split(",") if n.strip()} - set(off)
    if unknown:
        log.warning("%s names unknown switches %s (known: %s)", FAST_PATH_OFF_ENV, sorted(unknown), ", ".join(SWITCHES))
    model_class = _model_class(config) if config is not None else None

    def supports(attribute: str) -> bool:  # a class transformers does not map (remote code): assume not
        return config is None or bool(getattr(model_class, attribute, False))

    # transformers' flex attention refuses attention dropout in training (the catalog's models have none).
    no_dropout = not getattr(config, "attention_dropout", 0.0)
    flex = _importable("torch.nn.attention.flex_attention") and no_dropout and supports("_supports_flex_attn")
    flash = _importable("flash_attn") and supports("_supports_flash_attn")
    return Available(flex_attention=flex and "flex" not in off, flash_attention=flash and "flash" not in off,
                     liger="liger" not in off and liger_transformers() is not None)


def attention_implementation(device: torch.device, available: Available) -> str | None:
    """The attn_implementation to load the model with: None on the CPU (transformers' default, sdpa, with its dense
    packed mask, as always); on CUDA flex attention, else flash-attention's varlen, else sdpa (dense mask)."""
    if device.type != "cuda":
        return None
    if available.flex_attention:
        return "flex_attention"
    if available.flash_attention:
        return "flash_attention_2"
    return "sdpa"


def liger_kernel_function(device: torch.device, available: Available, model_type: str | None) -> str | None:
    """The liger_kernel function that patches `model_type`'s RMSNorm, RoPE and SwiGLU; None off CUDA, without
    liger_kernel, or for an architecture the table does not name (logged)."""
    if device.type != "cuda" or not available.liger:
        return None
    name = LIGER_KERNEL_FUNCTIONS.get(model_type or "")
    if name is None:
        log.info("no Liger kernels for model type %r: its own RMSNorm, RoPE and MLP are used", model_type)
    return name


def autocast_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The dtype compute_autocast runs in: the base's, when that is bf16 or fp16 (and not switched off); None in
    fp32, the CPU's dtype here, where nothing changes."""
    if dtype not in LOW_PRECISION or device.type not in ("cuda", "cpu") or "autocast" in switched_off():
        return None
    return dtype


def compute_autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """The context to run each row's forward pass in (the backward, outside it, follows the forward's dtypes, as
    torch.autocast asks): autocast in the base's dtype where that is bf16 (so any op left in fp32, such as a rotary
    table or an fp32 adapter weight, computes in bf16 too); a no-op in fp32, as on the CPU."""
    low = autocast_dtype(device, dtype)
    if low is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=low)


@dataclass(frozen=True)
class FastPath:
    """The choices of one run (choose()), reported by describe() in one log line."""

    attention: str | None
    liger_loss: bool
    liger_kernels: str | None
    autocast: torch.dtype | None
    compile: bool

    @property
    def dense_mask(self) -> bool:
        """Whether packed rows get transformers' dense T x T mask (memory.py counts it)."""
        return self.attention in DENSE_ATTENTION

    def describe(self) -> str:
        attention = {"flex_attention": "flex (packed blocks)", "flash_attention_2": "flash-attention varlen"}.get(
            self.attention or "", f"{self.attention or 'sdpa'} (dense packed mask)")
        kernels = "liger rms_norm/rope/swiglu" if self.liger_kernels else "liger kernels off"
        loss = "liger fused-linear-CE" if self.liger_loss else "chunked fused-linear-CE"
        precision = f"{SHORT_NAMES.get(self.autocast, str(self.autocast))} autocast" if self.autocast else "no autocast"
        return (f"fast path: attention {attention}, loss {loss}, {kernels}, {precision}, "
                f"compile {'on' if self.compile else 'off'}")


def choose(device: torch.device, dtype: torch.dtype, available: Available, model_type: str | None = None,
           torch_compile: bool = False) -> FastPath:
    """Every switch for a run on `device` in `dtype`: all off on the CPU (the plain path), on CUDA each that is
    available (torch_compile: the hyperparameter)."""
    return FastPath(
        attention=attention_implementation(device, available),
        liger_loss=device.type == "cuda" and available.liger,
        liger_kernels=liger_kernel_function(device, available, model_type),
        autocast=autocast_dtype(device, dtype),
        compile=torch_compile,
    )


def apply_liger_kernels(function_name: str | None) -> bool:
    """Patch the architecture's transformers module with Liger's RMSNorm, RoPE and SwiGLU; before the model is
    created. False (logged) when the function is missing from the installed liger_kernel."""
    if function_name is None:
        return False
    function = getattr(liger_transformers(), function_name, None)
    if function is None:
        log.warning("liger_kernel has no %s: the model's own kernels are used", function_name)
        return False
    accepted = inspect.signature(function).parameters
    function(**{name: on for name, on in LIGER_KERNEL_SWITCHES.items() if name in accepted})
    return True


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The decoder layers of a transformers model, under a peft wrapper or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.get_decoder().layers)


def compile_decoder_layers(model: Any) -> int:
    """Compile each decoder layer in place (nn.Module.compile: the parameters, their names and the state dict stay
    as they are), with dynamic shapes since every row has its own length. Returns how many were compiled."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)
