"""The training loop: optimizer steps over packed rows cut by a token budget (packing.py), evaluation, one metrics
record per logged step, a checkpoint at each epoch's end and every checkpoint_interval_s within one, and a stop
signal honoured between two rows (micro-batches): the run ends with a checkpoint of the last whole step instead of
finishing the step it is in.

What a row's loss is, how it is normalised over a step and which metrics it makes is the run's Objective:
SupervisedObjective here (cross-entropy on the labelled tokens, loss.py), DpoObjective in dpo.py."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import get_scheduler

from .checkpoints import Progress, load_checkpoint, save_checkpoint
from .contract import Paths
from .errors import TrainingError, TrainingStopped
from .hyperparameters import Hyperparameters
from .loss import LossSum, loss_over_targets
from .masking import TokenizedExample
from .metrics import emit_metrics, reset_metrics
from .packing import BatchPlan, PackedBatch, Step, pack, rows, schedule
from .stops import StopSignal

log = logging.getLogger(__name__)

MAX_GRAD_NORM = 1.0
HOLD_DEADLINE_S = 120.0
HOLD_POLL_S = 0.05


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


def hold_after_checkpoint(release: Path, stop: StopSignal, deadline_s: float = HOLD_DEADLINE_S, step: int = 0) -> None:
    """Test-only (LLMT_TRAINER_HOLD_AT_CHECKPOINT): wait until `release` exists or a stop signal arrives, so
    that a test interrupts the run at a known step rather than racing the machine's speed. A hold nothing ends
    is a broken test: it fails the run instead of letting it go on by chance. A release file that says "fail"
    fails the run right here, after the checkpoint of `step` (which stays)."""
    log.info("holding after the checkpoint until %s exists or a stop signal arrives (test-only)", release)
    deadline = time.monotonic() + deadline_s
    while not release.exists() and not stop.received:
        if time.monotonic() >= deadline:
            raise TrainingError(f"held after the first checkpoint for {deadline_s:g} s and never released: "
                                f"{release} did not appear and no stop signal came")
        time.sleep(HOLD_POLL_S)  # the SIGTERM handler runs in between: it only sets stop.received
    if stop.received:
        return
    try:
        asked = release.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        asked = ""
    if asked == "fail":
        raise TrainingError(f"test-only: failed after the checkpoint at step {step} as the release file asked")


class Objective(Protocol):
    """What one training method computes: its optimizer steps, a row's loss and the metrics they make."""

    def schedule(self, n_epochs: int) -> list[list[Step]]:
        """Every epoch's optimizer steps, each a list of rows."""
        ...

    def pack(self, row: list[Any]) -> Any:
        """A row as the tensors its forward pass takes; `.tokens`: how many tokens it holds."""
        ...

    def divisor(self, batches: list[Any]) -> int:
        """What a step's summed loss is divided by (its loss tokens, its pairs): the same update however it is cut."""
        ...

    def row_loss(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The row's summed loss (with its graph) and the sums its metrics are made of (detached, with "loss")."""
        ...

    def train_metrics(self, sums: dict[str, float], divisor: int) -> dict[str, float]:
        """The metrics record's training values over a logging window ("train_loss" first)."""
        ...

    def evaluate(self, model: Any) -> dict[str, float]:
        """The validation metrics ("valid_loss" ...); {} without validation data."""
        ...


@dataclass
class SupervisedObjective:
    """Cross-entropy over the labelled tokens (the assistant replies, or every token of a text)."""

    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    plan: BatchPlan
    seed: int
    device: torch.device
    loss_chunk_tokens: int = 1024

    def schedule(self, n_epochs: int) -> list[list[Step]]:
        return schedule(self.train, self.plan, self.seed, n_epochs)

    def pack(self, row: list[Any]) -> PackedBatch:
        return pack(row, self.device)

    def divisor(self, batches: list[Any]) -> int:
        return sum(b.loss_tokens for b in batches)

    def row_loss(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        result = batch_loss(model, batch, self.loss_chunk_tokens)
        return result.loss, {"loss": result.loss.detach(), "correct": result.correct}

    def train_metrics(self, sums: dict[str, float], divisor: int) -> dict[str, float]:
        return {"train_loss": round(sums["loss"] / divisor, 4), "train_accuracy": round(sums["correct"] / divisor, 4)}

    def evaluate(self, model: Any) -> dict[str, float]:
        if not self.validation:
            return {}
        loss, accuracy = evaluate(model, self.validation, self.plan.row_tokens, self.loss_chunk_tokens, self.device)
        return {"valid_loss": round(loss, 4), "valid_mean_token_accuracy": round(accuracy, 4)}


@dataclass
class _Window:
    """The sums of the steps since the last metrics record."""

    sums: dict[str, float] = field(default_factory=dict)
    divisor: int = 0

    def add(self, sums: dict[str, float], divisor: int) -> None:
        for name, value in sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.divisor += divisor


@dataclass
class TrainingRun:
    hp: Hyperparameters
    paths: Paths
    model: Any
    device: torch.device
    fingerprint: str
    stop: StopSignal
    objective: Objective

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
        schedule = self.objective.schedule(hp.n_epochs)
        total_steps = sum(len(steps) for steps in schedule)
        optimizer = torch.optim.AdamW(self._trainable(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        scheduler = get_scheduler(
            hp.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(hp.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )

        def checkpoint() -> Path:
            return save_checkpoint(self.paths.checkpoint_dir, progress, self.fingerprint, self.model, optimizer,
                                   scheduler, metrics_sink)

        resumed = load_checkpoint(
            self.paths.checkpoint_dir, self.fingerprint, self.model, optimizer, scheduler, metrics_sink
        )
        progress = resumed or Progress()
        if resumed:
            log.info("resuming from the checkpoint at step %d/%d", progress.step, total_steps)
        else:
            reset_metrics(metrics_sink)

        hold = self.paths.hold_at_checkpoint
        self.model.train()
        window = _Window()
        self.stop.deferred = True
        last_saved = time.monotonic()
        for step, epoch_progress, epoch_done, rows_of_step in self.iterate(schedule, progress.step):
            learning_rate = scheduler.get_last_lr()[0]
            outcome = self._optimizer_step(rows_of_step, step, optimizer)
            if outcome is None:  # stopped between two of the step's rows: the last whole step is what is saved
                raise self._stopped(step - 1, total_steps, checkpoint())
            sums, divisor, step_tokens = outcome
            scheduler.step()
            progress.step = step
            progress.trained_tokens += step_tokens
            window.add(sums, divisor)

            valid = self.objective.evaluate(self.model) if epoch_done else {}
            if valid:
                self.model.train()
                progress.last_valid_loss = valid["valid_loss"]
                progress.last_valid_accuracy = valid.get("valid_mean_token_accuracy",
                                                         valid.get("valid_reward_accuracy"))
            if step % hp.logging_steps == 0 or step == total_steps or valid:
                trained = self.objective.train_metrics(window.sums, window.divisor)
                progress.last_train_loss = trained["train_loss"]
                progress.last_reward_accuracy = trained.get("reward_accuracy", progress.last_reward_accuracy)
                record = {"step": step, "epoch": round(epoch_progress, 4), **trained,
                          "learning_rate": float(f"{learning_rate:.6g}"), "total_steps": total_steps,
                          "trained_tokens": progress.trained_tokens, **valid}
                emit_metrics(record, metrics_sink)
                window = _Window()
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
                    hold_after_checkpoint(hold, self.stop, step=step)
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
    ) -> tuple[dict[str, float], int, int] | None:
        """Forward and backward over the step's rows, then one update. Returns the step's metric sums, what its loss
        was divided by and its number of tokens; None when a stop arrived between two rows (the partial gradients
        are dropped, the random state put back as the step found it, so a resumed run does this step exactly as an
        uninterrupted one would). The loss is normalised over the whole step, so cutting it into rows gives the
        same update as one large batch."""
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        batches = [self.objective.pack(row) for row in rows_of_step]
        divisor = self.objective.divisor(batches)
        sums: dict[str, torch.Tensor] = {}
        for index, batch in enumerate(batches):
            if index and self.stop.received:
                optimizer.zero_grad(set_to_none=True)
                torch.set_rng_state(rng)
                if cuda_rng is not None:
                    torch.cuda.set_rng_state(cuda_rng, self.device)
                return None
            loss, parts = self.objective.row_loss(self.model, batch)
            (loss / divisor).backward()
            for name, value in parts.items():
                sums[name] = sums[name] + value if name in sums else value
        host = {name: float(value.item()) for name, value in sums.items()}  # the step's host syncs
        if not math.isfinite(host["loss"]):
            raise TrainingError(f"the training loss became {host['loss']} at step {step}; lower the learning rate")
        torch.nn.utils.clip_grad_norm_(self._trainable(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return host, divisor, sum(b.tokens for b in batches)
