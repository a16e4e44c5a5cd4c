"""Direct Preference Optimization (hyperparameter method=dpo): the adapter learns to prefer each pair's chosen reply
over its rejected one, relative to a reference model, with no reward model and no sampling.

Loss per pair: -logsigmoid(beta x ((pi_c - ref_c) - (pi_r - ref_r))), where pi and ref are the summed
log-probabilities of a reply's tokens (its assistant tokens as the loss mask of masking.py finds them, the prompt's
tokens none) under the policy (the base with the adapter) and under the reference. A step's loss is the mean over
its pairs. A reply's reward is beta x (pi - ref).

The reference:
  - a fresh adapter (the usual case): the base model itself, the same weights with the adapter switched off
    (`model.disable_adapter()`, under no_grad): one more forward pass per row, no second copy of the weights;
  - a run that starts from an adapter (the adapter channel, adapter_start.py): the starting model, base plus that
    adapter. Its log-probabilities are computed once, before training, for every train and validation pair, and
    kept with the pair (two floats): a second adapter switched in and out would need peft's set_adapter, which also
    moves requires_grad between the adapters under the optimizer. Computed before any checkpoint is loaded, so a
    resumed run gets the same reference.

Batching: a pair is one unit of packing.py (its tokens: both sequences), so a pair's chosen and rejected replies
are always in the same row, hence the same step; a row holds at least one pair (2 x max_seq_length tokens, see
memory.min_row_tokens). Position ids restart at each sequence, as for packed examples.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .data import Example, PreferencePair
from .loss import target_logprobs, target_positions
from .masking import (
    SkippedExample,
    TokenizedExample,
    TokenizedSet,
    check_skipped,
    counted_example,
    learn_markers,
    mask_conversation,
    skip_reason,
)
from .packing import BatchPlan, Step, rows, schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedPair:
    chosen: TokenizedExample
    rejected: TokenizedExample
    reference: tuple[float, float] | None = None  # the reference's summed log-probs, when computed up front

    @property
    def tokens(self) -> int:
        return self.chosen.tokens + self.rejected.tokens


@dataclass(frozen=True)
class PairBatch:
    """Pairs packed in one row: sequence 2i is pair i's chosen, 2i + 1 its rejected."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    target_positions: torch.Tensor
    targets: torch.Tensor
    target_sequences: torch.Tensor  # the sequence each target belongs to
    reference: torch.Tensor | None  # per sequence, when every pair has its reference
    pairs: int
    tokens: int


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss per pair, chosen rewards, rejected rewards): DPO's sigmoid loss on the summed log-probs."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    return -F.logsigmoid(chosen_rewards - rejected_rewards), chosen_rewards.detach(), rejected_rewards.detach()


def tokenize_pairs(tokenizer: Any, examples: Sequence[Example], max_seq_length: int, *,
                   use_generation_tags: bool) -> tuple[TokenizedSet, list[TokenizedPair]]:
    """Each pair's prompt + chosen and prompt + rejected, only the reply's tokens labelled (an assistant turn inside
    the prompt is context: weight 0). The set (its examples: chosen, rejected, ... in order) counts what happened:
    `truncated` sequences longer than max_seq_length, `dropped` pairs with a reply cut away entirely."""
    result = TokenizedSet(examples=[])
    pairs: list[TokenizedPair] = []
    if not examples:
        return result, pairs
    markers = learn_markers(tokenizer)
    for example in examples:
        assert isinstance(example, PreferencePair)  # load_conversations(method="dpo") gives nothing else
        prompt = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in example.messages]
        sides = []
        try:
            for reply in (example.chosen, example.rejected):
                sides.append(mask_conversation(tokenizer, [*prompt, reply], example.tools,
                                               use_generation_tags=use_generation_tags, markers=markers))
        except Exception as exc:  # the template may raise on a message layout it does not support
            result.skipped.append(SkippedExample(example.source, skip_reason(exc)))
            continue
        tokenized = [counted_example(result, side, max_seq_length) for side in sides]
        if any(side.loss_tokens == 0 for side in tokenized):
            result.dropped += 1
            continue
        result.examples += tokenized
        pairs.append(TokenizedPair(tokenized[0], tokenized[1]))
    check_skipped(result, len(examples))
    return result, pairs


def pack_pairs(pairs: Sequence[TokenizedPair], device: torch.device) -> PairBatch:
    input_ids: list[int] = []
    position_ids: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    sequences: list[int] = []
    for index, sequence in enumerate(side for pair in pairs for side in (pair.chosen, pair.rejected)):
        found, labels = target_positions(sequence.labels)
        positions += [len(input_ids) + p for p in found]
        targets += labels
        sequences += [index] * len(found)
        input_ids += sequence.input_ids
        position_ids += range(len(sequence.input_ids))
    references = [pair.reference for pair in pairs]
    reference = None
    if all(r is not None for r in references):
        reference = torch.tensor([v for r in references if r is not None for v in r], dtype=torch.float32,
                                 device=device)
    return PairBatch(
        input_ids=torch.tensor([input_ids], dtype=torch.long, device=device),
        position_ids=torch.tensor([position_ids], dtype=torch.long, device=device),
        target_positions=torch.tensor(positions, dtype=torch.long, device=device),
        targets=torch.tensor(targets, dtype=torch.long, device=device),
        target_sequences=torch.tensor(sequences, dtype=torch.long, device=device),
        reference=reference,
        pairs=len(pairs),
        tokens=len(input_ids),
    )


def sequence_logps(model: Any, batch: PairBatch, chunk_tokens: int) -> torch.Tensor:
    """The summed log-probability of each sequence's labelled tokens (2 x pairs values)."""
    per_target = target_logprobs(model, batch.input_ids, batch.position_ids, batch.target_positions, batch.targets,
                                 chunk_tokens)
    sums = torch.zeros(2 * batch.pairs, dtype=torch.float32, device=per_target.device)
    return sums.index_add(0, batch.target_sequences, per_target)


def reference_logps(model: Any, batch: PairBatch, chunk_tokens: int) -> torch.Tensor:
    if batch.reference is not None:
        return batch.reference
    with torch.no_grad(), model.disable_adapter():
        return sequence_logps(model, batch, chunk_tokens)


@torch.no_grad()
def with_reference(model: Any, pairs: list[TokenizedPair], row_tokens: int, chunk_tokens: int,
                   device: torch.device) -> list[TokenizedPair]:
    """The pairs with the current model's (the starting adapter's) log-probs kept as their reference."""
    model.eval()
    kept: dict[int, tuple[float, float]] = {}
    for row in rows(pairs, row_tokens):
        values = sequence_logps(model, pack_pairs(row, device), chunk_tokens).tolist()
        for index, pair in enumerate(row):
            kept[id(pair)] = (values[2 * index], values[2 * index + 1])
    model.train()
    return [dataclasses.replace(pair, reference=kept[id(pair)]) for pair in pairs]


@dataclass
class DpoObjective:
    """The loop's objective (loop.Objective) for DPO: the mean DPO loss over a step's pairs."""

    train: list[TokenizedPair]
    validation: list[TokenizedPair]
    plan: BatchPlan
    seed: int
    beta: float
    device: torch.device
    loss_chunk_tokens: int = 1024
    metric_sums: ClassVar[tuple[str, ...]] = ("loss", "reward_correct", "reward_margin", "chosen_logps",
                                              "rejected_logps")

    def schedule(self, n_epochs: int) -> list[list[Step]]:
        return schedule(self.train, self.plan, self.seed, n_epochs)

    def pack(self, row: list[Any]) -> PairBatch:
        return pack_pairs(row, self.device)

    def divisor(self, rows: Step) -> int:
        return sum(len(row) for row in rows)  # the step's pairs

    def row_loss(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reference = reference_logps(model, batch, self.loss_chunk_tokens)
        policy = sequence_logps(model, batch, self.loss_chunk_tokens)
        losses, chosen, rejected = dpo_loss(policy[0::2], policy[1::2], reference[0::2], reference[1::2], self.beta)
        loss = losses.sum()
        detached = policy.detach()
        return loss, {"loss": loss.detach(), "reward_correct": (chosen > rejected).sum().float(),
                      "reward_margin": (chosen - rejected).sum(), "chosen_logps": detached[0::2].sum(),
                      "rejected_logps": detached[1::2].sum()}

    def train_metrics(self, sums: dict[str, float], divisor: int) -> dict[str, float]:
        return {"train_loss": round(sums["loss"] / divisor, 4),
                "reward_accuracy": round(sums["reward_correct"] / divisor, 4),
                "reward_margin": round(sums["reward_margin"] / divisor, 4),
                "chosen_logps": round(sums["chosen_logps"] / divisor, 4),
                "rejected_logps": round(sums["rejected_logps"] / divisor, 4)}

    @torch.no_grad()
    def evaluate(self, model: Any) -> dict[str, float]:
        if not self.validation:
            return {}
        model.eval()
        loss, correct = 0.0, 0.0
        for row in rows(self.validation, self.plan.row_tokens):
            batch = self.pack(row)
            _, sums = self.row_loss(model, batch)
            loss += float(sums["loss"].item())
            correct += float(sums["reward_correct"].item())
        model.train()
        n = len(self.validation)
        return {"valid_loss": round(loss / n, 4), "valid_reward_accuracy": round(correct / n, 4)}
