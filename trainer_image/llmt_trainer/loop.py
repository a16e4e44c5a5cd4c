"""The training loop: optimizer steps over packed batches with the loss on the labelled tokens only, evaluation,
one metrics record per logged step, a checkpoint at each epoch's end and every checkpoint_interval_s within one,
and a stop signal that ends the run with a checkpoint instead of mid-step."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import get_scheduler

from .checkpoints import Progress, load_checkpoint, save_checkpoint
from .contract import METRICS_PREFIX, Paths
from .errors import TrainingError, TrainingStopped
from .hyperparameters import Hyperparameters
from .masking import IGNORE_INDEX, TokenizedExample
from .packing import PackedBatch, epoch_steps, pack, steps_per_epoch
from .stops import StopSignal

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0
HOLD_DEADLINE_S = 120.0
HOLD_POLL_S = 0.05
RESULTS_CSV = "results.csv"
RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")


def emit_metrics(record: dict[str, Any], sink: Path) -> None:
    """A METRICS line on stdout, a line of metrics.jsonl and a row of results.csv (beside it)."""
    line = json.dumps(record)
    print(METRICS_PREFIX + line, flush=True)
    with sink.open("a", encoding="utf-8") as out:
        out.write(line + "\n")
    results = sink.parent / RESULTS_CSV
    new = not results.exists()
    with results.open("a", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        if new:
            writer.writerow(RESULTS_COLUMNS)
        writer.writerow(["" if record.get(name) is None else record[name] for name in RESULTS_COLUMNS])



def loss_and_correct(model: Any, batch: PackedBatch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the batch's loss tokens (normalised by the caller, across accumulation) and
    how many of those tokens the model predicts exactly (argmax), for token accuracy."""
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    flat_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    targets = batch.labels[:, 1:].reshape(-1)
    loss = F.cross_entropy(flat_logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    with torch.no_grad():
        keep = targets != IGNORE_INDEX
        correct = int((flat_logits.argmax(dim=-1)[keep] == targets[keep]).sum().item())
    return loss, correct


def loss_sum(model: Any, batch: PackedBatch) -> torch.Tensor:
    """Summed cross-entropy over the batch's loss tokens."""
    return loss_and_correct(model, batch)[0]


@torch.no_grad()
def evaluate(
    model: Any, examples: Sequence[TokenizedExample], batch_size: int, device: torch.device
) -> tuple[float, float]:
    """(mean loss, token accuracy) over the loss tokens of `examples`."""
    model.eval()
    total, correct, tokens = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = pack(examples[start : start + batch_size], device)
        loss, hits = loss_and_correct(model, batch)
        total += loss.item()
        correct += hits
        tokens += batch.loss_tokens
    model.train()
    return total / tokens, correct / tokens


def hold_after_checkpoint(release: Path, stop: StopSignal, deadline_s: float = HOLD_DEADLINE_S) -> None:
    """Test-only (LLMT_TRAINER_HOLD_AT_CHECKPOINT): wait until `release` exists or a stop signal arrives, so
    that a test interrupts the run at a known step rather than racing the machine's speed. A hold nothing ends
    is a broken test: it fails the run instead of letting it go on by chance."""
    log.info("holding after the checkpoint until %s exists or a stop signal arrives (test-only)", release)
    deadline = time.monotonic() + deadline_s
    while not release.exists() and not stop.received:
        if time.monotonic() >= deadline:
            raise TrainingError(f"held after the first checkpoint for {deadline_s:g} s and never released: "
                                f"{release} did not appear and no stop signal came")
        time.sleep(HOLD_POLL_S)  # the SIGTERM handler runs in between: it only sets stop.received


@dataclass
class TrainingRun:
    hp: Hyperparameters
    paths: Paths
    model: Any
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    device: torch.device
    fingerprint: str
    stop: StopSignal

    def iterate(
        self, total_steps: int, per_epoch: int, start: int
    ) -> Iterator[tuple[int, int, list[list[TokenizedExample]]]]:
        """(global step, epoch, micro-batches) from step `start` + 1 on."""
        for epoch in range(start // per_epoch, self.hp.n_epochs):
            steps = epoch_steps(self.train, self.hp, epoch)
            for index, micro_batches in enumerate(steps):
                step = epoch * per_epoch + index + 1
                if start < step <= total_steps:
                    yield step, epoch, micro_batches

    def run(self, metrics_sink: Path) -> Progress:
        hp = self.hp
        per_epoch = steps_per_epoch(len(self.train), hp)
        total_steps = per_epoch * hp.n_epochs
        optimizer = torch.optim.AdamW(self._trainable(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        scheduler = get_scheduler(
            hp.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(hp.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )

        def checkpoint() -> Path:
            return save_checkpoint(
                self.paths.checkpoint_dir, progress, self.fingerprint, self.model, optimizer, scheduler
            )

        resumed = load_checkpoint(
            self.paths.checkpoint_dir, self.fingerprint, self.model, optimizer, scheduler
        )
        progress = resumed or Progress()
        if resumed:
            log.info("resuming from the checkpoint at step %d/%d", progress.step, total_steps)

        hold = self.paths.hold_at_checkpoint
        self.model.train()
        window_loss, window_tokens, window_correct = 0.0, 0, 0
        self.stop.deferred = True
        last_saved = time.monotonic()
        for step, epoch, micro_batches in self.iterate(total_steps, per_epoch, progress.step):
            learning_rate = scheduler.get_last_lr()[0]
            step_loss, step_loss_tokens, step_tokens, step_correct = self._optimizer_step(
                micro_batches, step, optimizer
            )
            scheduler.step()
            progress.step = step
            progress.trained_tokens += step_tokens
            window_loss += step_loss
            window_tokens += step_loss_tokens
            window_correct += step_correct

            epoch_done = step % per_epoch == 0
            evaluated = epoch_done and bool(self.validation)
            if step % hp.logging_steps == 0 or step == total_steps or evaluated:
                progress.last_train_loss = round(window_loss / window_tokens, 4)
                record = {
                    "step": step,
                    "epoch": round(step / per_epoch, 4),
                    "train_loss": progress.last_train_loss,
                    "train_accuracy": round(window_correct / window_tokens, 4),
                    "learning_rate": float(f"{learning_rate:.6g}"),
                    "total_steps": total_steps,
                    "trained_tokens": progress.trained_tokens,
                }
                if evaluated:
                    valid_loss, valid_accuracy = evaluate(self.model, self.validation, hp.batch_size, self.device)
                    progress.last_valid_loss = record["valid_loss"] = round(valid_loss, 4)
                    progress.last_valid_accuracy = record["valid_mean_token_accuracy"] = round(valid_accuracy, 4)
                emit_metrics(record, metrics_sink)
                window_loss, window_tokens, window_correct = 0.0, 0, 0
            if epoch_done:
                log.info("epoch %d/%d done at step %d", epoch + 1, hp.n_epochs, step)
            if self.stop.received:
                raise self._stopped(step, total_steps, checkpoint())
            interval_due = bool(hp.checkpoint_interval_s) and (
                time.monotonic() - last_saved >= hp.checkpoint_interval_s)
            # At each epoch's end (the last one too: a restart after the final step publishes without retraining),
            # and within an epoch every checkpoint_interval_s.
            if epoch_done or interval_due:
                saved = checkpoint()
                last_saved = time.monotonic()
                if not epoch_done:
                    log.info("checkpoint at step %d/%d, within epoch %d", step, total_steps, epoch + 1)
                if hold is not None:
                    hold_after_checkpoint(hold, self.stop)
                    hold = None
                    if self.stop.received:  # the checkpoint of this very step is already written
                        raise self._stopped(step, total_steps, saved)
        self.stop.deferred = False
        if self.stop.received:  # arrived after the last step's check
            raise TrainingStopped(f"Training stopped by {self.stop.received}; no model was published")
        return progress

    def _stopped(self, step: int, total_steps: int, checkpoint: Path) -> TrainingStopped:
        return TrainingStopped(
            f"Training stopped by {self.stop.received} at step {step}/{total_steps}; "
            f"checkpoint saved to {checkpoint}; no model was published"
        )

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _optimizer_step(
        self, micro_batches: list[list[TokenizedExample]], step: int, optimizer: torch.optim.Optimizer
    ) -> tuple[float, int, int, int]:
        """Forward and backward over the micro-batches, then one update. Returns the summed loss, the
        number of loss tokens, the number of tokens and the number of loss tokens predicted exactly. The loss
        is normalised over the whole step, so gradient accumulation gives the same update as one large batch."""
        batches = [pack(examples, self.device) for examples in micro_batches]
        loss_tokens = sum(b.loss_tokens for b in batches)
        total, correct = 0.0, 0
        for batch in batches:
            loss, hits = loss_and_correct(self.model, batch)
            (loss / loss_tokens).backward()
            total += loss.item()
            correct += hits
        if not math.isfinite(total):
            raise TrainingError(f"the training loss became {total} at step {step}; lower the learning rate")
        torch.nn.utils.clip_grad_norm_(self._trainable(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total, loss_tokens, sum(b.tokens for b in batches), correct
