"""Checkpoints for resuming after a stop or a spot interruption: the adapter's weights, the optimizer, the
scheduler and the random state, with the run's fingerprint so that only the very same run resumes from them.

A checkpoint folder (checkpoint-<step, 8 digits>/) holds adapter.safetensors (the adapter's weights, keyed as
peft's get_peft_model_state_dict gives them), adapter_config.json (the peft LoRA config: the folder is an adapter
another job can start from, see adapter_start.py), optimizer.pt, scheduler.pt, rng.pt, trainer_state.json (the
fingerprint and the progress) and metrics.jsonl (the run's metrics records up to its step, see metrics.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from .metrics import METRICS_FILE, keep_metrics, restore_metrics_text

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_STATE = "trainer_state.json"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng.pt"


@dataclass
class Progress:
    step: int = 0
    trained_tokens: int = 0
    last_train_loss: float | None = None
    last_valid_loss: float | None = None
    last_valid_accuracy: float | None = None
    last_reward_accuracy: float | None = None  # DPO


def adapter_weights(model: Any, trainable_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's weights as peft keys them, whole and on the CPU: from `trainable_state`
    (distributed.full_trainable_state, gathered from FSDP's shards) when given, else from the model itself."""
    state = get_peft_model_state_dict(model, state_dict=trainable_state)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(
    directory: Path, progress: Progress, fingerprint: str, model: Any, optimizer: Any, scheduler: Any,
    metrics_sink: Path | None = None, *, adapter: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write into a temp folder, then rename: a checkpoint folder that exists is complete. `adapter` and
    `optimizer_state`, when given, are the whole ones gathered by every rank of a sharded run (only rank 0 writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{progress.step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        save_file(adapter if adapter is not None else adapter_weights(model), str(staging / ADAPTER_FILE))
        model.peft_config["default"].save_pretrained(str(staging))  # adapter_config.json
        if metrics_sink is not None:
            keep_metrics(metrics_sink, staging)
        torch.save(optimizer_state if optimizer_state is not None else optimizer.state_dict(), staging / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), staging / SCHEDULER_FILE)
        rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, staging / RNG_FILE)
        state = {"fingerprint": fingerprint, **dataclasses.asdict(progress)}
        (staging / CHECKPOINT_STATE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for older in directory.glob(f"{CHECKPOINT_PREFIX}*"):
        if older != final and older.is_dir():
            shutil.rmtree(older, ignore_errors=True)
    return final


@dataclass
class Checkpoint:
    """A checkpoint read back, not yet applied: what a rank broadcasts to another that has none (distributed)."""

    folder: Path
    progress: Progress
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    metrics: str | None = None  # metrics.jsonl's text: rank 0 restores the metrics from it


def read_checkpoint(directory: Path, fingerprint: str) -> Checkpoint | None:
    """The newest checkpoint of this very run (same data and hyperparameters) that reads whole, if any."""
    if not directory.is_dir():
        return None
    for stale in directory.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for candidate in sorted(directory.glob(f"{CHECKPOINT_PREFIX}*"), reverse=True):
        try:
            state = json.loads((candidate / CHECKPOINT_STATE).read_text(encoding="utf-8"))
            if state.get("fingerprint") != fingerprint:
                log.warning("ignoring checkpoint %s: it belongs to other data or hyperparameters", candidate)
                continue
            adapter = load_file(str(candidate / ADAPTER_FILE))
            optimizer_state = torch.load(candidate / OPTIMIZER_FILE, weights_only=True)
            scheduler_state = torch.load(candidate / SCHEDULER_FILE, weights_only=True)
            rng = torch.load(candidate / RNG_FILE, weights_only=True)
            kept = candidate / METRICS_FILE
            metrics = kept.read_text(encoding="utf-8") if kept.is_file() else None
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            log.warning("ignoring unreadable checkpoint %s: %s", candidate, exc)
            continue
        fields = {f.name for f in dataclasses.fields(Progress)}
        progress = Progress(**{k: v for k, v in state.items() if k in fields})
        return Checkpoint(candidate, progress, adapter, optimizer_state, scheduler_state, rng, metrics)
    return None


def apply_adapter(checkpoint: Checkpoint, model: Any) -> None:
    set_peft_model_state_dict(model, checkpoint.adapter)


def apply_training_state(checkpoint: Checkpoint, optimizer: Any | None, scheduler: Any,
                         metrics_sink: Path | None = None) -> Progress:
    """The optimizer (None: already restored, as a sharded one is, by distributed.load_sharded_optimizer_state), the
    scheduler and the random state back as the checkpoint saved them, and (into `metrics_sink`, rank 0's) the
    metrics records up to its step."""
    if optimizer is not None:
        optimizer.load_state_dict(checkpoint.optimizer)
    scheduler.load_state_dict(checkpoint.scheduler)
    torch.set_rng_state(checkpoint.rng["cpu"])
    if "cuda" in checkpoint.rng and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # another number of GPUs than the run that saved it
            torch.cuda.set_rng_state_all(checkpoint.rng["cuda"])
    if metrics_sink is not None:
        restore_metrics_text(checkpoint.metrics, metrics_sink, checkpoint.progress.step)
    return dataclasses.replace(checkpoint.progress)

