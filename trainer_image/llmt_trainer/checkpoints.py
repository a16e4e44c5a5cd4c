"""Checkpoints for resuming after a stop or a spot interruption: the adapter's weights, the optimizer, the
scheduler and the random state, with the run's fingerprint so that only the very same run resumes from them.

A checkpoint folder (checkpoint-<step, 8 digits>/) holds adapter.safetensors (the adapter's weights, keyed as
peft's get_peft_model_state_dict gives them), adapter_config.json (the peft LoRA config: the folder is an adapter
another job can start from, see adapter_start.py), optimizer.pt, scheduler.pt, rng.pt, trainer_state.json (the
fingerprint and the progress) and metrics.jsonl (the run's metrics records up to its step, see metrics.py)."""

from __future__ import annotations

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

from .metrics import keep_metrics, restore_metrics

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


def save_checkpoint(
    directory: Path, progress: Progress, fingerprint: str, model: Any, optimizer: Any, scheduler: Any,
    metrics_sink: Path | None = None,
) -> Path:
    """Write into a temp folder, then rename: a checkpoint folder that exists is complete."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{CHECKPOINT_PREFIX}{progress.step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        adapter = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
        save_file(adapter, str(staging / ADAPTER_FILE))
        model.peft_config["default"].save_pretrained(str(staging))  # adapter_config.json
        if metrics_sink is not None:
            keep_metrics(metrics_sink, staging)
        torch.save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
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


def load_checkpoint(
    directory: Path, fingerprint: str, model: Any, optimizer: Any, scheduler: Any, metrics_sink: Path | None = None
) -> Progress | None:
    """Restore the newest checkpoint of this very run (same data and hyperparameters), if one is usable, and the
    metrics records up to its step into `metrics_sink`."""
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
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            log.warning("ignoring unreadable checkpoint %s: %s", candidate, exc)
            continue
        set_peft_model_state_dict(model, adapter)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        fields = {f.name for f in dataclasses.fields(Progress)}
        progress = Progress(**{k: v for k, v in state.items() if k in fields})
        if metrics_sink is not None:
            restore_metrics(candidate, metrics_sink, progress.step)
        return progress
    return None
