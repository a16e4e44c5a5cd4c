"""Hyperparameters: checks that need the model, "auto" resolved at launch, and SageMaker's string form.

Field bounds live on models.Hyperparameters (a violation is a 400 naming `hyperparameters.<field>`); the names
sent to SageMaker are the trainer's (trainer_image/finetune.py, Hyperparameters).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from services.training.models import Hyperparameters
from shared.errors import InvalidRequest

if TYPE_CHECKING:
    from services.training.catalog import BaseModelEntry

BASE_LEARNING_RATE = 2e-4  # the base rate of a model the catalog gives none, and of jobs resolved before it did
AUTO_MAX_SEQ_LENGTH = 2048  # "auto" never asks for more than this, whatever the model's context
# What the trainer always does, with no switch: it packs each micro-batch's examples into one row (no padding,
# position ids restarting per example), so `packing` is true or "auto"; false (padding) is not offered.
NOT_IN_TRAINER = {"packing": True}


def check(requested: Hyperparameters, base: BaseModelEntry, validation_file: str | None = None) -> None:
    """What the field bounds cannot know: the model's context length, options the trainer lacks, a split beside
    a validation file."""
    if validation_file and requested.validation_split not in ("auto", 0, 0.0):
        raise InvalidRequest("validation_split holds out part of the training file; with a validation_file "
                             "leave it 'auto' or 0.", param="hyperparameters.validation_split",
                             code="invalid_hyperparameter")
    if requested.max_seq_length != "auto" and int(requested.max_seq_length) > base.context_length:
        raise InvalidRequest(f"max_seq_length {requested.max_seq_length} is above {base.id}'s context length "
                             f"({base.context_length}).", param="hyperparameters.max_seq_length",
                             code="invalid_hyperparameter")
    for name, neutral in NOT_IN_TRAINER.items():
        value = getattr(requested, name)
        if value != "auto" and value != neutral:
            raise InvalidRequest(f"{name}={value!r} is not supported by the trainer, which always uses "
                                 f"{neutral!r}; leave it 'auto'.",
                                 param=f"hyperparameters.{name}", code="unsupported_hyperparameter")


def auto_epochs(examples: int) -> int:
    """OpenAI's cookbook heuristic: about 100 example passes for small files, 25,000 at most for large ones."""
    if examples * 3 < 100:
        return min(25, 100 // max(examples, 1))
    if examples * 3 > 25000:
        return max(1, 25000 // examples)
    return 3


def resolve(requested: Hyperparameters, examples: int, base: BaseModelEntry | None = None,
            seed: int | None = None) -> dict[str, Any]:
    """Every field a value: the caller's where given, else the trainer's defaults (LoRA r 8, alpha 2r)."""
    def pick(name: str, default: Any) -> Any:
        value = getattr(requested, name)
        return default if value == "auto" else value

    # The multiplier scales the model's own recommended rate (OpenAI's "base" learning rate), not one global rate.
    base_rate = base.learning_rate if base else BASE_LEARNING_RATE
    if requested.learning_rate != "auto":
        learning_rate = float(requested.learning_rate)
        multiplier = learning_rate / base_rate
    else:
        multiplier = float(pick("learning_rate_multiplier", 1.0))
        learning_rate = base_rate * multiplier
    lora_r = int(pick("lora_r", 8))
    context = base.context_length if base else AUTO_MAX_SEQ_LENGTH
    if seed is None:
        seed = int(pick("seed", secrets.randbelow(2**31)))
    return {
        "n_epochs": int(pick("n_epochs", auto_epochs(examples))),
        "batch_size": int(pick("batch_size", max(1, min(4, examples)))),
        "learning_rate_multiplier": multiplier,
        "learning_rate": learning_rate,
        "lora_r": lora_r,
        "lora_alpha": int(pick("lora_alpha", 2 * lora_r)),
        "lora_dropout": float(pick("lora_dropout", 0.05)),
        "target_modules": pick("target_modules", base.lora_target_modules if base else "all-linear"),
        "max_seq_length": int(pick("max_seq_length", min(context, AUTO_MAX_SEQ_LENGTH))),
        "warmup_ratio": float(pick("warmup_ratio", 0.0)),
        "weight_decay": float(pick("weight_decay", 0.0)),
        "gradient_accumulation_steps": int(pick("gradient_accumulation_steps", 1)),
        "lr_scheduler": pick("lr_scheduler", "linear"),
        "seed": seed,
        "packing": bool(pick("packing", True)),
        "validation_split": float(pick("validation_split", 0.0)),
        "merge_adapter": bool(pick("merge_adapter", False)),
    }


TRAINER_NAMES = ("n_epochs", "batch_size", "learning_rate", "lora_r", "lora_alpha", "lora_dropout", "target_modules",
                 "max_seq_length", "seed", "gradient_accumulation_steps", "warmup_ratio", "weight_decay",
                 "lr_scheduler", "validation_split", "merge_adapter")


def sagemaker_hyperparameters(resolved: dict[str, Any], base: BaseModelEntry, seed: int) -> dict[str, str]:
    """The trainer's names, every value a string (SageMaker's rule); older jobs' resolved sets lack some."""
    filled = {**resolve(Hyperparameters(), 0, base, seed), **resolved, "seed": seed}
    if "learning_rate" not in resolved:  # resolved before learning_rate was kept: from the multiplier
        filled["learning_rate"] = BASE_LEARNING_RATE * float(filled["learning_rate_multiplier"])  # their base then
    out = {name: filled[name] for name in TRAINER_NAMES}
    if isinstance(out["target_modules"], list):
        out["target_modules"] = ",".join(out["target_modules"])
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in out.items()}
