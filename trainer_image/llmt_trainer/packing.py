"""Batches without padding: each micro-batch's examples packed into one row, and the order of the optimizer
steps of an epoch, a pure function of (seed, epoch) so that a resumed run sees the same."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .hyperparameters import Hyperparameters
from .masking import TokenizedExample


@dataclass(frozen=True)
class PackedBatch:
    """Several examples concatenated into one row; position ids restart at each example, which (with the
    cache off) keeps examples from attending to each other and wastes nothing on padding."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    tokens: int
    loss_tokens: int


def pack(examples: Sequence[TokenizedExample], device: torch.device) -> PackedBatch:
    input_ids: list[int] = []
    position_ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        input_ids += example.input_ids
        position_ids += range(len(example.input_ids))
        labels += example.labels
    return PackedBatch(
        input_ids=torch.tensor([input_ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([position_ids], dtype=torch.long, device=device),
        labels=torch.tensor([labels], dtype=torch.long, device=device),
        tokens=len(input_ids),
        loss_tokens=sum(e.loss_tokens for e in examples),
    )

def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """The example order of one epoch, a pure function of (seed, epoch), so a resumed run sees the same."""
    order = list(range(n_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # noqa: S311 - shuffling, not security
    return order


def epoch_steps(
    examples: Sequence[TokenizedExample], hp: Hyperparameters, epoch: int
) -> list[list[list[TokenizedExample]]]:
    """The optimizer steps of one epoch: each a list of micro-batches, each a list of examples."""
    order = epoch_order(len(examples), hp.seed, epoch)
    micro = [[examples[i] for i in order[s : s + hp.batch_size]] for s in range(0, len(order), hp.batch_size)]
    accumulate = hp.gradient_accumulation_steps
    return [micro[s : s + accumulate] for s in range(0, len(micro), accumulate)]


def steps_per_epoch(n_examples: int, hp: Hyperparameters) -> int:
    return math.ceil(math.ceil(n_examples / hp.batch_size) / hp.gradient_accumulation_steps)
