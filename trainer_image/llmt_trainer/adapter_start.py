"""Starting from an adapter (the optional `adapter` channel): training continues from a LoRA adapter's weights on
the base model, as a new job (a fresh optimizer and schedule; not a resume, which checkpoints.py does).

The channel holds one of:
  - a folder written by peft's save_pretrained: adapter_config.json + adapter_model.safetensors (a finished job's
    model dir, which also holds the tokenizer and training_summary.json: those are ignored);
  - a model.tar.gz of that (a SageMaker model artifact), unpacked into the job's scratch folder;
  - one of our checkpoint folders (checkpoints.py): adapter_config.json + adapter.safetensors.
Each is looked for in the channel itself, then in its subfolders (the newest checkpoint first).

The adapter's own LoRA config (r, alpha, dropout, target modules, and everything else peft records) is the one the
run trains with: its weights only fit that shape. A lora_* hyperparameter that differs is named in a warning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .channels import find_in_channel
from .errors import ModelLoadError
from .hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter.safetensors")  # peft's save_pretrained, our checkpoints


@dataclass(frozen=True)
class StartAdapter:
    folder: Path
    config: dict[str, Any]  # adapter_config.json
    weights: Path
    digest: str  # sha256 of the weights file: the start's identity in the run's fingerprint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_start_adapter(channel: Path, scratch: Path) -> StartAdapter:
    """The adapter the channel holds, or a ModelLoadError saying what is wrong."""
    if not channel.is_dir():
        raise ModelLoadError(f"the adapter channel {channel} is not a directory")
    folder = find_in_channel(channel, CONFIG_FILE, scratch, newest_first=True)  # a checkpoint: the newest
    if folder is None:
        raise ModelLoadError(
            f"the adapter channel {channel} holds no adapter_config.json (a LoRA adapter written by save_pretrained, "
            "a model.tar.gz of one, or a checkpoint folder)"
        )
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read the adapter channel's {CONFIG_FILE}: {exc}") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ModelLoadError(f"the adapter channel's {CONFIG_FILE} is not a LoRA adapter's config")
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise ModelLoadError(f"the adapter channel's adapter has no weights file ({' or '.join(WEIGHT_FILES)})")
    return StartAdapter(folder, config, weights, _sha256(weights))


def _targets(value: Any) -> str | tuple[str, ...]:
    return value if isinstance(value, str) else tuple(sorted(value or ()))


def with_adapter_settings(hp: Hyperparameters, start: StartAdapter) -> Hyperparameters:
    """The hyperparameters with the adapter's LoRA settings, which win; each difference named in a warning."""
    adapter: dict[str, Any] = {"lora_r": int(start.config.get("r", hp.lora_r)),
               "lora_alpha": int(start.config.get("lora_alpha", hp.lora_alpha)),
               "lora_dropout": float(start.config.get("lora_dropout", hp.lora_dropout)),
               "target_modules": _targets(start.config.get("target_modules", hp.target_modules))}
    own = {"lora_r": hp.lora_r, "lora_alpha": hp.lora_alpha, "lora_dropout": hp.lora_dropout,
           "target_modules": _targets(hp.target_modules)}
    differences = [f"{name}={own[name]!r} -> {value!r}" for name, value in adapter.items() if own[name] != value]
    if differences:
        log.warning("the starting adapter's LoRA config wins over the hyperparameters: %s", ", ".join(differences))
    return dataclasses.replace(hp, **adapter)


def lora_config(start: StartAdapter) -> Any:
    """The peft LoraConfig of the starting adapter, trainable."""
    from peft import LoraConfig

    fields = {f.name for f in dataclasses.fields(LoraConfig)}
    values = {k: v for k, v in start.config.items() if k in fields}
    try:
        config = LoraConfig(**{**values, "inference_mode": False})
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"the adapter channel's {CONFIG_FILE} is not usable: {exc}") from exc
    return config


def load_start_weights(model: Any, start: StartAdapter) -> None:
    """The adapter's weights into the (same-shaped) fresh adapter; every LoRA weight must be matched."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        weights = load_file(str(start.weights))
        expected = set(get_peft_model_state_dict(model))
        result = set_peft_model_state_dict(model, weights)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"the adapter in the adapter channel does not fit the base model: {exc}") from exc
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    loaded = {k.replace(".default.", ".") for k in weights}
    missing = [k for k in expected if k.replace(".default.", ".") not in loaded]
    if unexpected or missing:
        shown = ", ".join((unexpected or missing)[:3])
        raise ModelLoadError(f"the adapter in the adapter channel does not fit the base model ({len(missing)} "
                             f"weights missing, {len(unexpected)} unexpected: {shown})")
    log.info("training starts from the adapter in %s (%d weights, sha256 %s)", start.folder, len(weights),
             start.digest[:12])
