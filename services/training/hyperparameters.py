"""Hyperparameters: checks that need the model, "auto" resolved at launch, and SageMaker's string form.

Field bounds live on models.Hyperparameters (a violation is a 400 naming `hyperparameters.<field>`); the names
sent to SageMaker are the trainer's (trainer_image/finetune.py, Hyperparameters).
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Any

from services.training import fit
from services.training.models import DEFAULT_DPO_BETA, DpoHyperparameters, Hyperparameters
from shared.errors import InvalidRequest
from trainer_image.llmt_trainer.memory import auto_tokens_per_step, min_row_tokens

if TYPE_CHECKING:
    from services.training.catalog import BaseModelEntry, InstanceType

BASE_LEARNING_RATE = 2e-4  # the base rate of a model the catalog gives none, and of jobs resolved before it did
AUTO_MAX_SEQ_LENGTH = fit.AUTO_MAX_SEQ_LENGTH
DEFAULT_CHECKPOINT_INTERVAL_S = 900  # the trainer's default: a checkpoint at least every 15 minutes
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
    if (requested.micro_batch_tokens != "auto" and requested.max_seq_length != "auto"
            and int(requested.micro_batch_tokens) < int(requested.max_seq_length)):
        raise InvalidRequest(f"micro_batch_tokens {requested.micro_batch_tokens} is below max_seq_length "
                             f"{requested.max_seq_length}: a pass holds at least one whole example.",
                             param="hyperparameters.micro_batch_tokens", code="invalid_hyperparameter")
    if requested.batch_size != "auto" and requested.tokens_per_step != "auto":
        raise InvalidRequest("Give batch_size (examples per step) or tokens_per_step, not both.",
                             param="hyperparameters.tokens_per_step", code="invalid_hyperparameter")
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


def max_seq_length(requested: Hyperparameters, base: BaseModelEntry | None) -> int:
    if requested.max_seq_length != "auto":
        return int(requested.max_seq_length)
    return fit.default_max_seq_length(base) if base else AUTO_MAX_SEQ_LENGTH


def memory_settings(requested: Hyperparameters) -> dict[str, Any]:
    """What the caller fixed of the memory model's choices (fit.plan_on's keywords)."""
    return {"load_in_4bit": requested.load_in_4bit is True,
            "gradient_checkpointing": None if requested.gradient_checkpointing == "auto"
            else bool(requested.gradient_checkpointing),
            "lora_rank": 8 if requested.lora_r == "auto" else int(requested.lora_r),
            "micro_batch_tokens": None if requested.micro_batch_tokens == "auto" else int(requested.micro_batch_tokens)}


def resolve(requested: Hyperparameters, examples: int, base: BaseModelEntry | None = None,
            seed: int | None = None, *, instance: InstanceType | None = None,
            file_tokens: int | None = None) -> dict[str, Any]:
    """See _resolve; a DPO request's `beta` resolved too ("auto": 0.1)."""
    resolved = _resolve(requested, examples, base, seed, instance=instance, file_tokens=file_tokens)
    if isinstance(requested, DpoHyperparameters):
        resolved["beta"] = DEFAULT_DPO_BETA if requested.beta == "auto" else float(requested.beta)
    return resolved


def _resolve(requested: Hyperparameters, examples: int, base: BaseModelEntry | None = None,
             seed: int | None = None, *, instance: InstanceType | None = None,
             file_tokens: int | None = None) -> dict[str, Any]:
    """Every field a value: the caller's where given, else the trainer's defaults (LoRA r 8, alpha 2r), and the
    memory model's plan for the model on `instance` (checkpointing, the tokens of a pass)."""
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
    if seed is None:
        seed = int(pick("seed", secrets.randbelow(2**31)))
    seq = max_seq_length(requested, base)
    # "auto" batch size: optimizer steps of tokens_per_step tokens (memory.auto_tokens_per_step over the file's
    # tokens); batch_size then shows about how many examples that is.
    tokens = file_tokens if file_tokens else examples * min(seq, 256)
    per_example = max(1, tokens // max(examples, 1))
    tokens_per_step: int | None = None
    if requested.batch_size == "auto":
        tokens_per_step = int(pick("tokens_per_step", auto_tokens_per_step(min(tokens, examples * seq))))
        batch_size = max(1, min(256, round(tokens_per_step / per_example)))
    else:
        batch_size = int(requested.batch_size)
    memory = memory_settings(requested)
    # A DPO pass holds a pair: both of its sequences (the trainer's memory.min_row_tokens).
    row = min_row_tokens(seq, requested.method)
    planned = fit.plan_on(base, instance, row, **memory) if base and instance else None
    return {
        "n_epochs": int(pick("n_epochs", auto_epochs(examples))),
        "batch_size": batch_size,
        "tokens_per_step": tokens_per_step,
        "learning_rate_multiplier": multiplier,
        "learning_rate": learning_rate,
        "lora_r": lora_r,
        "lora_alpha": int(pick("lora_alpha", 2 * lora_r)),
        "lora_dropout": float(pick("lora_dropout", 0.05)),
        "target_modules": pick("target_modules", base.lora_target_modules if base else "all-linear"),
        "max_seq_length": seq,
        "warmup_ratio": float(pick("warmup_ratio", 0.0)),
        "weight_decay": float(pick("weight_decay", 0.0)),
        "gradient_accumulation_steps": int(pick("gradient_accumulation_steps", 1)),
        "lr_scheduler": pick("lr_scheduler", "linear"),
        "seed": seed,
        "packing": bool(pick("packing", True)),
        "validation_split": float(pick("validation_split", 0.0)),
        "merge_adapter": bool(pick("merge_adapter", False)),
        "load_in_4bit": memory["load_in_4bit"],
        "gradient_checkpointing": planned.gradient_checkpointing if planned else memory["gradient_checkpointing"],
        "micro_batch_tokens": planned.row_tokens if planned else memory["micro_batch_tokens"],
        "checkpoint_interval_s": int(pick("checkpoint_interval_s", DEFAULT_CHECKPOINT_INTERVAL_S)),
        "torch_compile": bool(pick("torch_compile", False)),
    }


def steps_per_epoch(resolved: dict[str, Any], train_examples: int, tokens_per_epoch: int) -> int:
    """Optimizer steps in an epoch: by examples, or (auto batch size) by tokens, as the trainer cuts them."""
    if not train_examples:
        return 0
    if resolved.get("tokens_per_step"):
        return max(1, math.ceil(tokens_per_epoch / int(resolved["tokens_per_step"])))
    per_step = int(resolved["batch_size"]) * int(resolved.get("gradient_accumulation_steps", 1))
    return math.ceil(train_examples / per_step)


TRAINER_NAMES = ("n_epochs", "batch_size", "learning_rate", "lora_r", "lora_alpha", "lora_dropout", "target_modules",
                 "max_seq_length", "seed", "gradient_accumulation_steps", "warmup_ratio", "weight_decay",
                 "lr_scheduler", "validation_split", "merge_adapter", "tokens_per_step", "micro_batch_tokens",
                 "gradient_checkpointing", "load_in_4bit", "checkpoint_interval_s", "torch_compile")


def sagemaker_hyperparameters(resolved: dict[str, Any], base: BaseModelEntry, seed: int,
                              method: str = "supervised") -> dict[str, str]:
    """The trainer's names, every value a string (SageMaker's rule); older jobs' resolved sets lack some. A value
    left to the trainer ("auto": no tokens_per_step when batch_size was given, no memory plan) goes as "auto".
    A DPO job adds `method` and `beta`; a supervised one sends neither (the trainer's default)."""
    filled = {**resolve(Hyperparameters(), 0, base, seed), **resolved, "seed": seed}
    if "learning_rate" not in resolved:  # resolved before learning_rate was kept: from the multiplier
        filled["learning_rate"] = BASE_LEARNING_RATE * float(filled["learning_rate_multiplier"])  # their base then
    if "tokens_per_step" not in resolved:  # resolved before token steps: its batch_size is the caller's or 4
        filled["tokens_per_step"] = None
    if filled["tokens_per_step"]:
        filled["batch_size"] = "auto"  # the trainer cuts steps by tokens; batch_size was only the estimate of it
    out = {name: "auto" if filled.get(name) is None else filled[name] for name in TRAINER_NAMES}
    if isinstance(out["target_modules"], list):
        out["target_modules"] = ",".join(out["target_modules"])
    if method == "dpo":
        out["method"] = "dpo"
        out["beta"] = filled.get("beta") or DEFAULT_DPO_BETA
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in out.items()}
