"""The training loop: optimizer steps over packed rows cut by a token budget (packing.py), evaluation, one metrics
record per logged step, a checkpoint at each epoch's end and every checkpoint_interval_s within one, and a stop
signal honoured between two rows (micro-batches): the run ends with a checkpoint of the last whole step instead of
finishing the step it is in.

What a row's loss is, how it is normalised over a step and which metrics it makes is the run's Objective:
SupervisedObjective here (cross-entropy on the labelled tokens, loss.py), DpoObjective in dpo.py."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from transformers import get_scheduler

from .checkpoints import (
    Checkpoint,
    Progress,
    adapter_weights,
    apply_adapter,
    apply_training_state,
    read_checkpoint,
    save_checkpoint,
)
from .contract import Paths
from .distributed import (
    World,
    all_reduce_gradients,
    any_rank,
    barrier,
    broadcast_object,
    full_trainable_state,
    gather_objects,
    gradient_scale,
    load_sharded_optimizer_state,
    seed_row,
    set_gradient_sync,
    shard_model,
    sharded_optimizer_state,
    split_rows,
    sum_over_ranks,
)
from .errors import TrainingError, TrainingStopped
from .fast_path import compile_decoder_layers
from .hyperparameters import Hyperparameters
from .loss import LossSum, loss_over_targets, target_positions
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

    @property
    def metric_sums(self) -> tuple[str, ...]:
        """The names of the sums row_loss returns ("loss" first): every rank reports all of them, zeros when it
        had no row."""
        ...

    def divisor(self, rows: Step) -> int:
        """What a step's summed loss is divided by (its loss tokens, its pairs), from all its rows (every rank
        computes it for the whole step): the same update however the step is cut into rows or over ranks."""
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

    metric_sums: ClassVar[tuple[str, ...]] = ("loss", "correct")

    def schedule(self, n_epochs: int) -> list[list[Step]]:
        return schedule(self.train, self.plan, self.seed, n_epochs)

    def pack(self, row: list[Any]) -> PackedBatch:
        return pack(row, self.device)

    def divisor(self, rows: Step) -> int:
        # What pack() counts as the row's loss tokens: the targets of the row's concatenated labels.
        return sum(len(target_positions([label for example in row for label in example.labels])[1]) for row in rows)

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
    """The sums of the steps since the last metrics record, kept on the device: read (one host sync, and in a
    multi-process run one all-reduce) only at logging steps and checkpoints."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    divisor: int = 0
    first_step: int = 0
    last_step: int = 0

    def add(self, sums: dict[str, torch.Tensor], divisor: int, step: int) -> None:
        for name, value in sums.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.divisor += divisor
        self.first_step = self.first_step or step
        self.last_step = step


def build_optimizer(params: list[torch.nn.Parameter], hp: Hyperparameters,
                    device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel over all the parameters instead of several small ops each) where torch has the fused
    kernel for the device: CUDA, and the CPU in torch 2.13; the plain one elsewhere (or on FSDP's sharded parameters
    off CUDA)."""
    from torch.distributed.tensor import DTensor

    fused = device.type == "cuda" or (device.type == "cpu" and not any(isinstance(p, DTensor) for p in params))
    if fused:
        try:
            return torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=True)
        except (RuntimeError, ValueError, TypeError) as exc:  # a dtype or device without the fused kernel
            log.info("fused AdamW unavailable here (%s): the plain one", exc)
    return torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)


@dataclass
class TrainingRun:
    hp: Hyperparameters
    paths: Paths
    model: Any
    device: torch.device
    fingerprint: str
    stop: StopSignal
    objective: Objective
    world: World = field(default_factory=World)
    # The forward passes' autocast (fast_path.compute_autocast: bf16 on a GPU; nothing on the CPU); the backward
    # passes run outside it, as torch recommends.
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext

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
        hp, world = self.hp, self.world
        schedule = self.objective.schedule(hp.n_epochs)
        total_steps = sum(len(steps) for steps in schedule)
        resumed = self._agreed_checkpoint()
        if resumed is not None:
            apply_adapter(resumed, self.model)  # before sharding: into the whole parameters
        if world.sharded:
            shard_model(self.model, world)
        if hp.torch_compile:  # after sharding: each compiled layer's parameters are already its shards
            log.info("torch.compile: %d decoder layers compiled", compile_decoder_layers(self.model))
        optimizer = build_optimizer(self._trainable(), hp, self.device)
        scheduler = get_scheduler(
            hp.lr_scheduler,
            optimizer,
            num_warmup_steps=math.ceil(hp.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        progress = Progress()
        window = _Window()

        def checkpoint() -> Path:
            """Every rank calls it (a sharded adapter is gathered from all); rank 0 writes, the others wait."""
            self._read(window)  # no checkpoint keeps a non-finite loss
            trainable = full_trainable_state(self.model) if world.sharded else None
            optimizer_state = sharded_optimizer_state(self.model, optimizer) if world.sharded else None
            saved = self.paths.checkpoint_dir / f"checkpoint-{progress.step:08d}"
            if world.main:
                saved = save_checkpoint(
                    self.paths.checkpoint_dir, progress, self.fingerprint, self.model, optimizer, scheduler,
                    metrics_sink, adapter=adapter_weights(self.model, trainable) if world.sharded else None,
                    optimizer_state=optimizer_state)
            barrier(world)
            return saved

        if resumed is not None:
            if world.sharded:
                load_sharded_optimizer_state(self.model, optimizer, resumed.optimizer)
            progress = apply_training_state(resumed, None if world.sharded else optimizer, scheduler,
                                            metrics_sink if world.main else None)
            if world.main:
                log.info("resuming from the checkpoint at step %d/%d", progress.step, total_steps)
        elif world.main:
            reset_metrics(metrics_sink)

        hold = self.paths.hold_at_checkpoint
        self.model.train()
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
            window.add(sums, divisor, step)

            with self.autocast():
                valid = self.objective.evaluate(self.model) if epoch_done else {}
            if valid:
                self.model.train()
                progress.last_valid_loss = valid["valid_loss"]
                progress.last_valid_accuracy = valid.get("valid_mean_token_accuracy",
                                                         valid.get("valid_reward_accuracy"))
            if step % hp.logging_steps == 0 or step == total_steps or valid:
                trained = self.objective.train_metrics(self._read(window), window.divisor)
                progress.last_train_loss = trained["train_loss"]
                progress.last_reward_accuracy = trained.get("reward_accuracy", progress.last_reward_accuracy)
                record = {"step": step, "epoch": round(epoch_progress, 4), **trained,
                          "learning_rate": float(f"{learning_rate:.6g}"), "total_steps": total_steps,
                          "trained_tokens": progress.trained_tokens, **valid}
                if world.main:
                    emit_metrics(record, metrics_sink)
                window = _Window()
            if epoch_done:
                log.info("epoch %d/%d done at step %d", round(epoch_progress), hp.n_epochs, step)
            interval_due = bool(hp.checkpoint_interval_s) and (
                time.monotonic() - last_saved >= hp.checkpoint_interval_s)
            # Several processes agree once per step (one small all-reduce, one host sync) on whether any received
            # the stop signal and whether a checkpoint is due (their clocks differ): all stop at the same step.
            stopping, interval_due = any_rank(world, self.device, self.stop.received is not None, interval_due)
            if stopping:
                raise self._stopped(step, total_steps, checkpoint())
            # At each epoch's end (the last one too: a restart after the final step publishes without retraining),
            # and within an epoch every checkpoint_interval_s.
            if epoch_done or interval_due:
                saved = checkpoint()
                last_saved = time.monotonic()
                if not epoch_done and world.main:
                    log.info("checkpoint at step %d/%d, within epoch %d", step, total_steps, int(epoch_progress) + 1)
                if hold is not None:
                    hold_after_checkpoint(hold, self.stop, step=step)
                    hold = None
                    if any_rank(world, self.device, self.stop.received is not None)[0]:
                        raise self._stopped(step, total_steps, saved)  # the checkpoint of this very step is written
        self.stop.deferred = False
        if any_rank(world, self.device, self.stop.received is not None)[0]:  # arrived after the last step's check
            raise TrainingStopped(f"Training stopped by {self._signal_name()}; no model was published")
        return progress

    def _agreed_checkpoint(self) -> Checkpoint | None:
        """The checkpoint to resume from: each rank reads its own SM_CHECKPOINT_DIR (SageMaker downloads the
        checkpoint prefix into every host's); where they disagree (a host without the newest), rank 0's is sent to
        all, so loading never needs rank 0's files on another host."""
        found = read_checkpoint(self.paths.checkpoint_dir, self.fingerprint)
        if not self.world.distributed:
            return found
        steps = gather_objects(self.world, found.progress.step if found else None)
        if len(set(steps)) == 1:
            return found
        if self.world.main:
            log.info("the ranks' checkpoints differ (steps %s): rank 0's is sent to every rank", steps)
        shared: Checkpoint | None = broadcast_object(self.world, found if self.world.main else None)
        return shared

    def _read(self, window: _Window) -> dict[str, float]:
        """The window's sums on the host (summed over the ranks); a non-finite loss fails the run, naming the steps."""
        if not window.last_step:
            return {}
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        names = self.objective.metric_sums
        stacked = torch.stack([window.sums[n].to(torch.float64) if n in window.sums else zero for n in names])
        values = dict(zip(names, sum_over_ranks(self.world, stacked).tolist(), strict=True))
        if not math.isfinite(values["loss"]):
            steps = (f"at step {window.last_step}" if window.first_step == window.last_step
                     else f"between steps {window.first_step} and {window.last_step}")
            raise TrainingError(f"the training loss became {values['loss']} {steps}; lower the learning rate")
        return values

    def _signal_name(self) -> str:
        return self.stop.received or "a stop signal on another rank"

    def _stopped(self, step: int, total_steps: int, checkpoint: Path) -> TrainingStopped:
        return TrainingStopped(
            f"Training stopped by {self._signal_name()} at step {step}/{total_steps}; "
            f"checkpoint saved to {checkpoint}; no model was published"
        )

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _optimizer_step(
        self, rows_of_step: Step, step: int, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, torch.Tensor], int, int] | None:
        """Forward and backward over this rank's rows of the step, the gradients summed over the ranks, then one
        update. Returns the rank's metric sums (on the device), what the step's loss is divided by and the step's
        tokens (both over all ranks); None when, in a one-process run, a stop arrived between two rows (the
        partial gradients are dropped, so a resumed run does this step exactly as an uninterrupted one would).
        The loss is normalised over the whole step, so cutting it into rows or over ranks gives the same update."""
        world = self.world
        divisor = self.objective.divisor(rows_of_step)
        tokens = [sum(item.tokens for item in row) for row in rows_of_step]
        parts = split_rows(tokens, world.size)
        mine = parts[world.rank]
        # FSDP gathers each layer's weights with a collective in every pass: every rank makes as many passes, a
        # rank short of rows repeating the step's first row with its loss weighted 0.
        passes = max(len(part) for part in parts) if world.sharded else len(mine)
        sums: dict[str, torch.Tensor] = {}
        for n in range(passes):
            if n and not world.distributed and self.stop.received:
                optimizer.zero_grad(set_to_none=True)
                return None
            set_gradient_sync(self.model, world, n == passes - 1)
            index = mine[n] if n < len(mine) else None
            seed_row(self.hp.seed, step, 0 if index is None else index)  # dropout: the same masks on any rank
            with self.autocast():
                loss, metric_parts = self.objective.row_loss(self.model,
                                                             self.objective.pack(rows_of_step[index or 0]))
            if index is None:
                (loss * 0).backward()
                continue
            (loss * gradient_scale(world) / divisor).backward()
            for name, value in metric_parts.items():
                sums[name] = sums[name] + value if name in sums else value
        if world.distributed and not world.sharded:
            all_reduce_gradients(self._trainable())
        torch.nn.utils.clip_grad_norm_(self._trainable(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sums, divisor, sum(tokens)
