"""The trainer's own choices from the memory model (memory.py), made before the model is loaded: gradient
checkpointing ("auto": on only when the rows do not fit without it), the token budget of a row, and the tokens of an
optimizer step ("auto" batch size). A job that cannot fit even one max_seq_length example fails here, at once,
saying what would fit, instead of running out of memory after the start-up has been paid for."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .errors import HyperparameterError
from .hyperparameters import Hyperparameters
from .memory import (
    CPU_MEMORY_SHARE,
    GIB,
    Architecture,
    auto_tokens_per_step,
    distributed_plan,
    min_row_tokens,
    predict,
)
from .packing import BatchPlan

log = logging.getLogger(__name__)



def read_architecture(source: str) -> Architecture | None:
    """The base model's shape from its config.json (a local folder, or the Hub's config, a few KB)."""
    try:
        path = Path(source) / "config.json"
        if path.is_file():
            config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        else:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(source).to_dict()
        return Architecture.from_config(config.get("text_config") or config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the model's shape from its config (%s); no memory plan", exc)
        return None


def device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * CPU_MEMORY_SHARE)


def _too_big(hp: Hyperparameters, arch: Architecture, capacity: int, dtype_bytes: int,
             dense_mask: bool = True) -> HyperparameterError:
    shortest = min_row_tokens(hp.max_seq_length, hp.method)
    with_checkpointing = predict(arch, shortest, dtype_bytes=dtype_bytes, load_in_4bit=hp.load_in_4bit,
                                 gradient_checkpointing=True, lora_rank=hp.lora_r, dense_mask=dense_mask)
    hints = [] if hp.load_in_4bit else ["load_in_4bit=true (QLoRA)"]
    if hp.gradient_checkpointing is False:
        hints.insert(0, "gradient_checkpointing=auto")
    hints += ["a shorter max_seq_length", "an instance type with more GPU memory"]
    return HyperparameterError(
        f"the model does not fit this device's memory ({capacity / GIB:.1f} GiB) at max_seq_length="
        f"{hp.max_seq_length}: it needs about {with_checkpointing.total / GIB:.1f} GiB even with gradient "
        f"checkpointing; try {', '.join(hints)}"
    )


def plan_for_device(hp: Hyperparameters, arch: Architecture | None, device: torch.device, dtype: torch.dtype,
                    train_tokens: int, world_size: int = 1,
                    dense_mask: bool = True) -> tuple[Hyperparameters, BatchPlan, str]:
    """The hyperparameters with "auto" checkpointing and row budget decided, how steps are cut, and how the
    `world_size` processes share the model (memory.distributed_plan's choice between them): "ddp", a whole copy
    on each, where it fits one device; else "fsdp", the weights sharded over all of them (with load_in_4bit,
    "fsdp_qlora", which this trainer refuses: its 4-bit loading is for one device)."""
    if hp.batch_size:
        steps = {"examples_per_step": hp.batch_size * hp.gradient_accumulation_steps}
    else:
        steps = {"tokens_per_step": hp.tokens_per_step or auto_tokens_per_step(train_tokens)}
    if arch is None:
        row_tokens = max(hp.micro_batch_tokens, min_row_tokens(hp.max_seq_length, hp.method))
        resolved = dataclasses.replace(hp, gradient_checkpointing=bool(hp.gradient_checkpointing),
                                       micro_batch_tokens=row_tokens)
        return resolved, BatchPlan(row_tokens=row_tokens, **steps), "ddp"
    capacity = device_memory(device)
    dtype_bytes = torch.finfo(dtype).bits // 8
    # A row holds at least one whole example: a DPO pair is both its sequences.
    shortest = min_row_tokens(hp.max_seq_length, hp.method)
    # The service's fit (services/training/fit.py) makes the same call for the job's instances.
    decided = distributed_plan(arch, capacity, world_size, 1, shortest, dtype_bytes=dtype_bytes,
                               load_in_4bit=hp.load_in_4bit, lora_rank=hp.lora_r,
                               gradient_checkpointing=hp.gradient_checkpointing,
                               row_tokens=hp.micro_batch_tokens or None, dense_mask=dense_mask)
    if decided is None:
        raise _too_big(hp, arch, capacity, dtype_bytes, dense_mask)
    strategy, chosen = decided
    strategy = "ddp" if strategy == "qlora" else strategy  # one process, 4-bit: a whole copy, as ddp's
    _check_strategy(hp, strategy)
    if hp.micro_batch_tokens and chosen.row_tokens < hp.micro_batch_tokens:
        log.warning("micro_batch_tokens=%d does not fit the device's memory; rows of %d tokens instead",
                    hp.micro_batch_tokens, chosen.row_tokens)
    log.info("memory plan (%.1f GiB %s): gradient checkpointing %s, rows of up to %d tokens, predicted peak %s",
             capacity / GIB, device.type, "on" if chosen.gradient_checkpointing else "off", chosen.row_tokens,
             json.dumps(chosen.predicted.as_gib()))
    resolved = dataclasses.replace(hp, gradient_checkpointing=chosen.gradient_checkpointing,
                                   micro_batch_tokens=chosen.row_tokens)
    return resolved, BatchPlan(row_tokens=chosen.row_tokens, **steps), strategy


def _check_strategy(hp: Hyperparameters, strategy: str) -> None:
    if strategy == "fsdp_qlora":
        raise HyperparameterError("the model fits these GPUs only sharded in 4-bit (FSDP QLoRA), which this trainer "
                                  "does not do yet; try load_in_4bit=false (sharded bf16), a shorter max_seq_length "
                                  "or more GPUs")
    if strategy == "fsdp" and hp.merge_adapter:
        raise HyperparameterError("merge_adapter=true needs the whole model in one process, and this model fits "
                                  "these GPUs only sharded (FSDP); merge the adapter in a job on larger GPUs")
