"""One training job from start to end: hyperparameters, data, tokenizer and model, the training loop, then the
adapter and the summary. Everything it does is in the modules it calls; this is the order they run in."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .adapter_start import StartAdapter, resolve_start_adapter, with_adapter_settings
from .contract import Paths
from .data import load_conversations, split_validation
from .device_plan import plan_for_device, read_architecture
from .distributed import World, barrier, full_trainable_state
from .dpo import DpoObjective, TokenizedPair, tokenize_pairs, with_reference
from .errors import DataError
from .fast_path import compute_autocast
from .hyperparameters import Hyperparameters, parse_hyperparameters, read_hyperparameters_file, unquote
from .launch import DISTRIBUTION_HYPERPARAMETER
from .loop import Objective, SupervisedObjective, TrainingRun
from .masking import TokenizedExample, TokenizedSet, dataset_fingerprint, has_generation_tags, tokenize_conversations
from .memory import loss_chunk_tokens
from .metrics import METRICS_FILE
from .model_loading import (
    HF_TOKEN_SECRET_PARAM,
    choose_fast_path,
    fetch_hf_token,
    load_model,
    load_tokenizer,
    pick_device,
    resolve_model_source,
    use_hf_token,
)
from .outputs import MERGED_DIR, publish_model, save_model, write_summary
from .packing import BatchPlan
from .stops import StopSignal

log = logging.getLogger(__name__)


def _log_data(name: str, tokenized: TokenizedSet, hp: Hyperparameters) -> None:
    log.info(
        "%s data: %d examples, %d tokens, %d assistant (loss) tokens",
        name, len(tokenized.examples), tokenized.tokens, tokenized.loss_tokens,
    )  # fmt: skip
    if tokenized.split:
        log.info("%s data: %d texts longer than max_seq_length=%d were split into chunks",
                 name, tokenized.split, hp.max_seq_length)  # fmt: skip
    if tokenized.truncated:
        log.warning("%s data: %d conversations longer than max_seq_length=%d were truncated",
                    name, tokenized.truncated, hp.max_seq_length)  # fmt: skip
    if tokenized.dropped:
        log.warning("%s data: %d examples dropped: no assistant token left within max_seq_length=%d",
                    name, tokenized.dropped, hp.max_seq_length)  # fmt: skip
    tokenized.log_masking(name)


def _tokenize(tokenizer: Any, examples: list[Any], hp: Hyperparameters,
              use_generation_tags: bool) -> tuple[TokenizedSet, list[TokenizedExample] | list[TokenizedPair]]:
    """The set (its counts) and what training packs: its examples, or for DPO its pairs."""
    if hp.method == "dpo":
        return tokenize_pairs(tokenizer, examples, hp.max_seq_length, use_generation_tags=use_generation_tags)
    tokenized = tokenize_conversations(tokenizer, examples, hp.max_seq_length, use_generation_tags=use_generation_tags)
    return tokenized, tokenized.examples


def _objective(hp: Hyperparameters, model: Any, train: list[Any], validation: list[Any], plan: BatchPlan,
               device: Any, chunk: int, start: StartAdapter | None) -> Objective:
    if hp.method != "dpo":
        return SupervisedObjective(train, validation, plan, hp.seed, device, chunk)
    if start is not None:  # the reference is the starting model: its log-probs kept before any training
        log.info("DPO reference: the starting adapter's log-probabilities of %d pairs, computed once",
                 len(train) + len(validation))
        train = with_reference(model, train, plan.row_tokens, chunk, device)
        validation = with_reference(model, validation, plan.row_tokens, chunk, device)
    return DpoObjective(train, validation, plan, hp.seed, hp.beta, device, chunk)


def _maths(hp: Hyperparameters) -> dict[str, Any]:
    """The hyperparameters that change what training computes (torch_compile only changes how fast): a resumed run
    with compile switched on or off still resumes."""
    return {name: value for name, value in hp.as_dict().items() if name != "torch_compile"}


def model_identity(folder: Path) -> str:
    """A saved model's identity by content, not by where it lies: its config and each file's name and size."""
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for item in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(folder)}:{item.stat().st_size}\n".encode())
    return "model:" + digest.hexdigest()


def train(paths: Paths, overrides: Mapping[str, str], stop: StopSignal, world: World | None = None) -> dict[str, Any]:
    """The job; in a run of several processes (distributed.py) every rank runs all of it, and only rank 0 writes
    the metrics, the checkpoints and the model, the others waiting for it at a barrier at the end."""
    started = time.monotonic()
    world = world or World()
    raw_hyperparameters = {**read_hyperparameters_file(paths.input_config_dir), **overrides}
    hp, ignored = parse_hyperparameters(raw_hyperparameters)
    ignored = [name for name in ignored if name != HF_TOKEN_SECRET_PARAM and name != DISTRIBUTION_HYPERPARAMETER]
    use_hf_token(fetch_hf_token(str(unquote(raw_hyperparameters.get(HF_TOKEN_SECRET_PARAM) or "")) or None))
    if ignored:
        log.warning("ignoring unknown hyperparameters: %s", ", ".join(ignored))
    log.info("hyperparameters: %s", json.dumps(hp.as_dict()))

    train_conversations = load_conversations(paths.train_channel, "train", hp.method)
    validation_conversations = (
        load_conversations(paths.validation_channel, "validation", hp.method) if paths.validation_channel else []
    )
    if hp.validation_split > 0:
        if validation_conversations:
            log.warning("validation_split ignored: the validation channel is the validation set")
        else:
            train_conversations, validation_conversations = split_validation(
                train_conversations, hp.validation_split, hp.seed
            )
            log.info("validation_split %g: %d examples held out", hp.validation_split,
                     len(validation_conversations))
    with tempfile.TemporaryDirectory(prefix="finetune-") as scratch:
        source = resolve_model_source(paths, hp, Path(scratch))
        device, dtype = pick_device()
        if device.type == "cuda" and world.distributed:
            device = torch.device("cuda", world.local_rank)
        log.info("base model: %s (device %s, %s)", source, device, str(dtype).removeprefix("torch."))
        tokenizer = load_tokenizer(source)
        use_generation_tags = has_generation_tags(tokenizer)
        log.info("chat template %s generation markers", "with" if use_generation_tags else "without")

        train_set, train_units = _tokenize(tokenizer, train_conversations, hp, use_generation_tags)
        validation_set, validation_units = _tokenize(tokenizer, validation_conversations, hp, use_generation_tags)
        _log_data("train", train_set, hp)
        if not train_units:
            raise DataError(
                f"no training example keeps an assistant token within max_seq_length={hp.max_seq_length}"
            )
        if validation_conversations:
            _log_data("validation", validation_set, hp)

        start = resolve_start_adapter(paths.adapter_channel, Path(scratch)) if paths.adapter_channel else None
        if start is not None:
            hp = with_adapter_settings(hp, start)
        architecture = read_architecture(source)
        fast = choose_fast_path(source, hp, device, dtype)  # attention, kernels, autocast, compile (fast_path.py)
        log.info("%s", fast.describe())
        hp, batch_plan, strategy = plan_for_device(hp, architecture, device, dtype, train_set.tokens, world.size,
                                                   dense_mask=fast.dense_mask)
        world = world.with_strategy(strategy)
        log.info("distributed: %s", world.describe())
        model = load_model(source, hp, device, dtype, start, fast_path=fast)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA adapter: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total
    )

    base_model = hp.model_id if paths.model_channel is None or "model_id" in hp.given else source
    start_identity = start.digest if start else None
    # The run's identity, which a checkpoint must share to be resumed: never a path of this container (a resumed
    # SageMaker job is a new container, its channels elsewhere), so a base from the model channel counts by content.
    base_identity = base_model if base_model != source else model_identity(Path(source))
    fingerprint = hashlib.sha256(
        json.dumps([_maths(hp), base_identity, dataset_fingerprint(train_set, validation_set), start_identity])
        .encode()
    ).hexdigest()
    if world.main:
        paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    metrics_sink = paths.output_data_dir / METRICS_FILE
    chunk = loss_chunk_tokens(architecture.vocab_size if architecture else len(tokenizer))
    autocast = partial(compute_autocast, device, dtype)
    with autocast():  # DPO's reference log-probabilities, when computed up front
        objective = _objective(hp, model, train_units, validation_units, batch_plan, device, chunk, start)
    run = TrainingRun(hp, paths, model, device, fingerprint, stop, objective, world, autocast)
    progress = run.run(metrics_sink)

    trainable_state = full_trainable_state(model) if world.sharded else None  # every rank: gathered from shards
    if world.main:
        save_model(model, tokenizer, paths, hp, base_model, trainable_state)
    summary = {
        "status": "completed",
        "base_model": base_model,
        "base_model_source": "model_channel" if paths.model_channel else "model_id",
        "method": hp.method,
        "start_adapter_sha256": start_identity,
        "hyperparameters": hp.as_dict(),
        "ignored_hyperparameters": ignored,
        "examples": len(train_set.examples),
        "validation_examples": len(validation_set.examples),
        "truncated_examples": train_set.truncated,
        "split_texts": train_set.split,
        "dropped_examples": train_set.dropped,
        "tokens_per_epoch": train_set.tokens,
        "assistant_tokens_per_epoch": train_set.loss_tokens,
        "trained_tokens": progress.trained_tokens,
        "steps": progress.step,
        "epochs": hp.n_epochs,
        "final_train_loss": progress.last_train_loss,
        "final_valid_loss": progress.last_valid_loss,
        "final_valid_mean_token_accuracy": progress.last_valid_accuracy if hp.method == "supervised" else None,
        **({"pairs": len(train_units), "validation_pairs": len(validation_units),
            "final_reward_accuracy": progress.last_reward_accuracy,
            "final_valid_reward_accuracy": progress.last_valid_accuracy} if hp.method == "dpo" else {}),
        "merged_model": (hp.merged_model_uri or MERGED_DIR) if hp.merge_adapter else None,
        **train_set.mask_summary(),
        "device": device.type,
        "dtype": str(dtype).removeprefix("torch."),
        "duration_s": round(time.monotonic() - started, 2),
    }
    if world.main:
        write_summary(paths, summary)
        publish_model(paths, stop)
    else:
        stop.deferred = True  # rank 0 publishes: a signal now only waits with it
    barrier(world)
    return summary
