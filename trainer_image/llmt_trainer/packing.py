"""Batches without padding, cut by a token budget, and the order of the optimizer steps, a pure function of (seed,
epoch) so that a resumed run sees the same.

An optimizer step takes the next examples of the epoch's shuffled order: `batch_size x gradient_accumulation_steps`
of them, or, with `tokens_per_step` (what "auto" batch size means), as many as reach that many tokens (at least
one). The step's examples are packed into rows of at most `row_tokens` tokens, first fit decreasing (the longest
example first, each into the first row with room): each row is one micro-batch, one forward and backward pass,
so the memory a pass needs is set by the token budget, never by how long the examples happen to be. The loss is
summed over the step's rows and divided by the step's loss tokens (loop.py), so a step gives the same update
however it is cut into rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from .loss import target_positions
from .masking import TokenizedExample


class Packable(Protocol):
    """What packing cuts by: a tokenized example, or a DPO pair (both its sequences go in the same row)."""

    @property
    def tokens(self) -> int: ...


Item = TypeVar("Item", bound=Packable)
Step = list[list[Any]]  # an optimizer step: its rows, each a list of examples (or DPO pairs)


@dataclass(frozen=True)
class PackedBatch:
    """Several examples concatenated into one row; position ids restart at each example, which (with the
    cache off) keeps examples from attending to each other and wastes nothing on padding. The positions whose
    next token is a target and those targets are computed here, on the host, so the loss needs no host sync."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    target_positions: torch.Tensor
    targets: torch.Tensor
    tokens: int
    loss_tokens: int


@dataclass(frozen=True)
class BatchPlan:
    """How an epoch is cut into optimizer steps and rows."""

    row_tokens: int  # the most tokens in one row (micro-batch)
    examples_per_step: int = 0  # batch_size x gradient_accumulation_steps; 0: by tokens_per_step
    tokens_per_step: int = 0


def pack(examples: Sequence[TokenizedExample], device: torch.device) -> PackedBatch:
    input_ids: list[int] = []
    position_ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        input_ids += example.input_ids
        position_ids += range(len(example.input_ids))
        labels += example.labels
    positions, targets = target_positions(labels)
    return PackedBatch(
        input_ids=torch.tensor([input_ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([position_ids], dtype=torch.long, device=device),
        target_positions=torch.tensor(positions, dtype=torch.long, device=device),
        targets=torch.tensor(targets, dtype=torch.long, device=device),
        tokens=len(input_ids),
        loss_tokens=len(targets),
    )


def rows(examples: Sequence[Item], row_tokens: int) -> list[list[Item]]:
    """First fit decreasing: the longest example first, each into the first row it fits; an example longer than
    `row_tokens` (the budget is never below max_seq_length, so only by a caller's mistake) gets a row of its own."""
    filled: list[list[Item]] = []
    room: list[int] = []
    for example in sorted(examples, key=lambda e: -e.tokens):  # stable: equal lengths keep their order
        size = example.tokens
        index = next((i for i, free in enumerate(room) if size <= free), None)
        if index is None:
            filled.append([example])
            room.append(row_tokens - size)
        else:
            filled[index].append(example)
            room[index] -= size
    return filled


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch, a pure function of (seed, epoch), so a resumed run sees the same."""
    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # noqa: S311 - shuffling, not security
    return order


def epoch_steps(examples: Sequence[Item], plan: BatchPlan, seed: int, epoch: int) -> list[list[list[Item]]]:
    """The optimizer steps of one epoch, each a list of rows."""
    ordered = [examples[i] for i in epoch_order(len(examples), seed, epoch)]
    groups: list[list[Item]] = []
    if plan.examples_per_step:
        size = plan.examples_per_step
        groups = [ordered[s : s + size] for s in range(0, len(ordered), size)]
    else:
        current: list[Item] = []
        tokens = 0
        for example in ordered:
            current.append(example)
            tokens += example.tokens
            if tokens >= plan.tokens_per_step:
                groups.append(current)
                current, tokens = [], 0
        if current:
            groups.append(current)
    return [rows(group, plan.row_tokens) for group in groups]


def schedule(units: Sequence[Item], plan: BatchPlan, seed: int, n_epochs: int) -> list[list[Step]]:
    """Every epoch's optimizer steps, planned up front: the scheduler needs their number, and a step's tokens (hence
    how many steps an epoch has) depend on the epoch's order."""
    return [epoch_steps(units, plan, seed, epoch) for epoch in range(n_epochs)]
