"""The base model and its tokenizer: where they load from (the model channel, a model.tar.gz in it, or the
Hub id, with a gated model's token read from Secrets Manager), on which device and dtype, optionally 4-bit
(QLoRA), with the LoRA adapter added (lora.py).

The `except Exception` clauses below turn a library's error into a FailureReason; a stop signal arriving in the
middle of a download or a load is a BaseException (stops.StopRequested) and passes through them unchanged."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from .adapter_start import StartAdapter, load_start_weights, lora_config
from .channels import find_in_channel
from .contract import Paths
from .errors import HyperparameterError, ModelLoadError
from .fast_path import Available, FastPath, apply_liger_kernels, choose, detect
from .hyperparameters import Hyperparameters
from .lora import add_lora_adapter, prepare_base_model

log = logging.getLogger(__name__)

HF_TOKEN_SECRET_PARAM = "hf_token_secret"  # noqa: S105 - the hyperparameter's name, not a secret


def fetch_hf_token(secret_id: str | None, client: Any = None) -> str | None:
    """The Hugging Face token for gated models, read from AWS Secrets Manager at start: only the secret's
    name or ARN travels with the job (hyperparameter `hf_token_secret`), never the token. The secret holds
    the token itself or JSON with "HF_TOKEN" (or "token")."""
    if not secret_id:
        return None
    try:
        if client is None:
            import boto3  # only jobs that need a token need boto3

            # An ARN names its region; else the job's own (SageMaker sets AWS_REGION in the container).
            region = secret_id.split(":")[3] if secret_id.startswith("arn:") else os.environ.get("AWS_REGION")
            client = boto3.client("secretsmanager", **({"region_name": region} if region else {}))
        response = client.get_secret_value(SecretId=secret_id)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read the Hugging Face token from Secrets Manager secret {secret_id}: {exc}"
        ) from exc
    text = (response.get("SecretString") or response.get("SecretBinary", b"").decode("utf-8", "replace")).strip()
    token: Any = text
    if text.startswith("{"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            values = {}
        if not isinstance(values, dict):
            values = {}
        token = values.get("HF_TOKEN") or values.get("hf_token") or values.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ModelLoadError(f"Secrets Manager secret {secret_id} holds no Hugging Face token")
    return token.strip()


def use_hf_token(token: str | None) -> None:
    """The Hub client reads HF_TOKEN at each download: set in this process only, never in the job's config."""
    if token:
        os.environ["HF_TOKEN"] = token
        log.info("Hugging Face token read from Secrets Manager")


def resolve_model_source(paths: Paths, hp: Hyperparameters, scratch: Path) -> str:
    """The folder or Hub id to load the base model from: the model channel when there is one."""
    channel = paths.model_channel
    if channel is None:
        return hp.model_id
    if not channel.is_dir():
        raise ModelLoadError(f"model channel {channel} is not a directory")
    found = find_in_channel(channel, "config.json", scratch)
    if found is not None:
        return str(found)
    raise ModelLoadError(
        f"model channel {channel} holds no config.json (a folder written by save_pretrained)"
    )


def pick_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        # Older GPUs (T4, V100) lack bf16; fp16 would need loss scaling, so they train in fp32.
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.device("cpu"), torch.float32


# Used when the base model's tokenizer has none (a base, not instruct, model): ChatML turns, each closed by the
# tokenizer's own end-of-sequence token (so a model tuned on it stops where generation stops), with the
# assistant's reply and its end inside {% generation %} so the loss mask comes from the template; no separator
# after the end, so the prefix-rendering method finds the same spans. `{EOS}` is filled in per tokenizer.
FALLBACK_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- message['content'] + {EOS} -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- message['content'] + {EOS} -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
CHATML_END = "<|im_end|>"  # the end of a turn when the tokenizer has no end-of-sequence token


def fallback_chat_template(eos_token: str | None) -> str:
    """The fallback template closing each turn with `eos_token` (a Jinja string literal, quotes escaped)."""
    end = json.dumps(eos_token or CHATML_END)
    return FALLBACK_CHAT_TEMPLATE.replace("{EOS}", end)


def load_tokenizer(source: str) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"the tokenizer of {source} is not a fast tokenizer; token offsets are needed")
    if not tokenizer.chat_template:
        log.warning("the tokenizer of %s has no chat template; using a ChatML fallback template", source)
        tokenizer.chat_template = fallback_chat_template(tokenizer.eos_token)
    return tokenizer


def _quantization_config(device: torch.device, dtype: torch.dtype) -> Any:
    """QLoRA's 4-bit NF4 config; bitsandbytes is imported only here, when load_in_4bit asks for it."""
    if device.type != "cuda":
        raise HyperparameterError("load_in_4bit (QLoRA) needs a CUDA GPU; none is available")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise HyperparameterError(
            "load_in_4bit (QLoRA) needs the bitsandbytes package, which is not installed in this image"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def choose_fast_path(source: str, hp: Hyperparameters, device: torch.device, dtype: torch.dtype) -> FastPath:
    """The run's fast path (fast_path.py): on CUDA what is installed and what the model's class supports (its
    config.json read for that); on the CPU every switch off, nothing read."""
    if device.type != "cuda":
        return choose(device, dtype, Available(), torch_compile=hp.torch_compile)
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as exc:  # a stop signal is no Exception: it passes through (stops.py)
        raise ModelLoadError(f"cannot read the config of the base model {source}: {exc}") from exc
    return choose(device, dtype, detect(config), getattr(config, "model_type", None), hp.torch_compile)


def load_model(source: str, hp: Hyperparameters, device: torch.device, dtype: torch.dtype,
               start: StartAdapter | None = None, fast_path: FastPath | None = None) -> Any:
    """The base model on `device` in `dtype` (4-bit with load_in_4bit), frozen, with the LoRA adapter (lora.py):
    a fresh one, or the starting adapter's config and weights (adapter_start.py). `fast_path`: the attention and
    kernels to load it with (choose_fast_path when not given, logged); compile and autocast are the loop's."""
    if fast_path is None:
        fast_path = choose_fast_path(source, hp, device, dtype)
        log.info("%s", fast_path.describe())
    kwargs: dict[str, Any] = {"dtype": dtype}
    if fast_path.attention is not None:
        # Packed rows via position ids: flex attention skips the blocks outside each example (fast_path.py).
        kwargs["attn_implementation"] = fast_path.attention
    apply_liger_kernels(fast_path.liger_kernels)  # patches the architecture's module, so before the model exists
    if hp.load_in_4bit:
        kwargs["quantization_config"] = _quantization_config(device, dtype)
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except Exception as exc:  # a stop signal is no Exception: it passes through (stops.py)
        raise ModelLoadError(f"cannot load the base model {source}: {exc}") from exc
    model.config.use_cache = False  # packed rows rely on position ids, which the cache path ignores
    if not hp.load_in_4bit:  # a 4-bit model is already on its device (device_map) and cannot be moved
        model.to(device)
    prepare_base_model(model, bool(hp.gradient_checkpointing))
    if start is None:
        return add_lora_adapter(model, hp, dtype)
    peft_model = add_lora_adapter(model, hp, dtype, lora_config(start))
    load_start_weights(peft_model, start)
    return peft_model
