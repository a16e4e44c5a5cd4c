"""The training loop: optimizer steps over packed rows cut by a token budget (packing.py) with the loss on the
labelled tokens only (loss.py), evaluation, one metrics record per logged step, a checkpoint at each epoch's end and
every checkpoint_interval_s within one, and a stop signal honoured between two rows (micro-batches): the run ends
with a checkpoint of the last whole step instead of finishing the step it is in."""

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
from transformers import get_scheduler

from .checkpoints import Progress, load_checkpoint, save_checkpoint
from .contract import METRICS_PREFIX, Paths
from .errors import TrainingError, TrainingStopped
from .hyperparameters import Hyperparameters
from .loss import LossSum, loss_over_targets
from .masking import TokenizedExample
from .packing import BatchPlan, PackedBatch, Step, epoch_steps, pack, rows
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



def batch_loss(model: Any, batch: PackedBatch, chunk_tokens: int) -> LossSum:
    """Summed cross-entropy over the row's loss tokens and how many of them the model predicts exactly."""
    return loss_over_targets(model, batch.input_ids, batch.position_ids, batch.target_positions, batch.targets,
                             chunk_tokens)


def loss_sum(model: Any, batch: PackedBatch, chunk_tokens: int = 1024) -> torch.Tensor:
    """Summed cross-entropy over the batch's loss tokens."""
    return batch_loss(model, batch, chunk_tokens).loss


@torch.no_grad()
def evaluate(model: Any, examples: Sequence[TokenizedExample], row_tokens: int, chunk_tokens: int,
             device: torch.device) -> tuple[float, float]:
    """(mean loss, token accuracy) over the loss tokens of `examples`, packed into rows of the training budget."""
    model.eval()
    total = torch.zeros((), dtype=torch.float32, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    tokens = 0
    for row in rows(examples, row_tokens):
        batch = pack(row, device)
        result = batch_loss(model, batch, chunk_tokens)
        total += result.loss
        correct += result.correct
        tokens += batch.loss_tokens
    model.train()
    return total.item() / tokens, correct.item() / tokens


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
    plan: BatchPlan
    loss_chunk_tokens: int = 1024

    def schedule(self) -> list[list[Step]]:
        """Every epoch's optimizer steps, planned up front: the scheduler needs their number, and a step's
        tokens (hence how many steps an epoch has) depend on the epoch's order."""
        return [epoch_steps(self.train, self.plan, self.hp.seed, epoch) for epoch in range(self.hp.n_epochs)]

    @staticmethod
    def iterate(schedule: list[list[Step]], start: int) -> Iterator[tuple[int, float, bool, Step]]:
        """(global step, epoch progress after it, whether it ends its epoch, its rows) from step `start` + 1 on."""
        step = 0
        for epoch, steps in enumerate(schedule):
            for index, rows_of_step in enumerate(steps, start=1):
                step += 1
                if step > start:
                    yield step, epoch + index / len(steps), index == len(steps), rows_of_step

    def run(self, metrics_sink: Path) -> Progress:
        hp = self.hp
        schedule = self.schedule()
        total_steps = sum(len(steps) for steps in schedule)
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
        for step, epoch_progress, epoch_done, rows_of_step in self.iterate(schedule, progress.step):
            learning_rate = scheduler.get_last_lr()[0]
            outcome = self._optimizer_step(rows_of_step, step, optimizer)
            if outcome is None:  # stopped between two of the step's rows: the last whole step is what is saved
                raise self._stopped(step - 1, total_steps, checkpoint())
            step_loss, step_loss_tokens, step_tokens, step_correct = outcome
            scheduler.step()
            progress.step = step
            progress.trained_tokens += step_tokens
            window_loss += step_loss
            window_tokens += step_loss_tokens
            window_correct += step_correct

            evaluated = epoch_done and bool(self.validation)
            if step % hp.logging_steps == 0 or step == total_steps or evaluated:
                progress.last_train_loss = round(window_loss / window_tokens, 4)
                record = {
                    "step": step,
                    "epoch": round(epoch_progress, 4),
                    "train_loss": progress.last_train_loss,
                    "train_accuracy": round(window_correct / window_tokens, 4),
                    "learning_rate": float(f"{learning_rate:.6g}"),
                    "total_steps": total_steps,
                    "trained_tokens": progress.trained_tokens,
                }
                if evaluated:
                    valid_loss, valid_accuracy = evaluate(self.model, self.validation, self.plan.row_tokens,
                                                          self.loss_chunk_tokens, self.device)
                    progress.last_valid_loss = record["valid_loss"] = round(valid_loss, 4)
                    progress.last_valid_accuracy = record["valid_mean_token_accuracy"] = round(valid_accuracy, 4)
                emit_metrics(record, metrics_sink)
                window_loss, window_tokens, window_correct = 0.0, 0, 0
            if epoch_done:
                log.info("epoch %d/%d done at step %d", round(epoch_progress), hp.n_epochs, step)
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
                    log.info("checkpoint at step %d/%d, within epoch %d", step, total_steps, int(epoch_progress) + 1)
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
        self, rows_of_step: Step, step: int, optimizer: torch.optim.Optimizer
    ) -> tuple[float, int, int, int] | None:
        """Forward and backward over the step's rows, then one update. Returns the summed loss, the number of loss
        tokens, the number of tokens and the number of loss tokens predicted exactly; None when a stop arrived
        between two rows (the partial gradients are dropped, the random state put back as the step found it, so a
        resumed run does this step exactly as an uninterrupted one would). The loss is normalised over the whole
        step, so cutting it into rows gives the same update as one large batch."""
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        batches = [pack(examples, self.device) for examples in rows_of_step]
        loss_tokens = sum(b.loss_tokens for b in batches)
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for index, batch in enumerate(batches):
            if index and self.stop.received:
                optimizer.zero_grad(set_to_none=True)
                torch.set_rng_state(rng)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state(cuda_rng, self.device)
                return None
            result = batch_loss(self.model, batch, self.loss_chunk_tokens)
            (result.loss / loss_tokens).backward()
            total += result.loss.detach()
            correct += result.correct
        summed = total.item()  # the step's one host sync
        if not math.isfinite(summed):
            raise TrainingError(f"the training loss became {summed} at step {step}; lower the learning rate")
        torch.nn.utils.clip_grad_norm_(self._trainable(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return summed, loss_tokens, sum(b.tokens for b in batches), int(correct.item())
