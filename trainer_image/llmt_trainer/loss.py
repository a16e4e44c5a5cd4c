"""The loss over the tokens that carry a label, without ever holding the logits of a whole row in fp32.

The decoder runs once over the packed row; only the hidden states of the positions whose next token is a target
go through the output layer, in chunks of `chunk_tokens`. Each chunk's logits (upcast to fp32 for a stable
softmax) exist only while that chunk is computed, so the output layer costs `chunk_tokens x vocabulary` fp32
values at a time instead of `row x vocabulary` (Qwen2.5's 152k vocabulary over an 8k-token row would be 4.6 GiB
of fp32 logits, their softmax and gradient as much again). The memory model (memory.py) counts exactly this chunk.

A frozen output layer without bias (every catalog model's, LoRA on "all-linear" leaves it out) takes the fused
path: each chunk's loss and its gradient with respect to the hidden states are computed together in the forward
pass (softmax minus one-hot, times the weight), so the backward pass only scales that gradient: the output
layer's matmul runs twice per labelled token, as in plain training, and nothing of the logits is kept. Any other
head (one with an adapter or a bias) recomputes each chunk's logits in the backward pass (activation
checkpointing): a third matmul, but still one chunk at a time.

On CUDA with liger_kernel importable (the GPU image's requirements-gpu.txt), the fused path is Liger's Triton kernel
of the same computation (LigerFusedLinearCrossEntropyLoss: the loss and the hidden states' gradient in the forward
pass, chunked by the kernel), chosen by liger_loss; everywhere else, and with LLMT_FAST_PATH_OFF=liger, this
module's own (fast_path.py).

Models whose logits are not a plain linear map of the last hidden state (a soft cap or a scale after the output
layer) take the plain path: the model's own forward, all logits, then the same selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .fast_path import liger_transformers, switched_off
from .masking import IGNORE_INDEX

# Config attributes that put something between the output layer and the logits (Gemma 2's soft cap, Cohere's
# scale): such models are not split into decoder and output layer here.
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")


@dataclass(frozen=True)
class LossSum:
    """Summed cross-entropy over the loss tokens (normalised by the caller, across accumulation) and how many of
    them the model predicts exactly, kept on the device: reading it is a host sync, done only when logging."""

    loss: torch.Tensor
    correct: torch.Tensor


def _chunk_loss(
    head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()
    loss = F.cross_entropy(logits, targets, reduction="sum")
    correct = (logits.detach().argmax(dim=-1) == targets).sum()
    return loss, correct


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `targets` over chunks, the gradient with respect to
    `hidden` made in the same pass (the weight is frozen: it gets none)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        grad = torch.empty_like(hidden)
        for start in range(0, hidden.shape[0], chunk_tokens):
            part = slice(start, start + chunk_tokens)
            logits = F.linear(hidden[part], weight).float()
            picked = targets[part]
            log_norm = torch.logsumexp(logits, dim=-1)
            total += (log_norm - logits.gather(1, picked.unsqueeze(1)).squeeze(1)).sum()
            correct += (logits.argmax(dim=-1) == picked).sum()
            probabilities = logits.sub_(log_norm.unsqueeze(1)).exp_()  # in place: the chunk's only fp32 copy
            probabilities[torch.arange(picked.shape[0], device=picked.device), picked] -= 1
            grad[part] = probabilities.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor, _grad_correct: Any) -> tuple[Any, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None, None


def liger_loss(device: torch.device) -> Any:
    """Liger's fused linear cross-entropy, summed and with each position's predicted token, called as
    `(weight, hidden, targets)`: on CUDA where liger_kernel imports; None (loss.py's own) anywhere else."""
    if device.type != "cuda" or "liger" in switched_off():
        return None
    liger = liger_transformers()
    if liger is None:
        return None
    return liger.LigerFusedLinearCrossEntropyLoss(reduction="sum", return_predicted_tokens=True)


def _fusable(head: Any) -> bool:
    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def _splits_cleanly(base: Any) -> bool:
    config = getattr(base, "config", None)
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_POSTPROCESSING):
        return False
    return callable(getattr(base, "get_decoder", None)) and base.get_output_embeddings() is not None


def _base_model(model: Any) -> Any:
    """The transformers model under a peft wrapper (its linear layers carry the adapter), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _at_targets(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor,
                target_positions: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """(the last hidden states at `target_positions`, the output layer) when the model splits into decoder and output
    layer; else (the model's own logits at those positions, None): the plain path."""
    base = _base_model(model)
    if not _splits_cleanly(base):
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1]).index_select(0, target_positions), None
    hidden = base.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, target_positions), base.get_output_embeddings()


def loss_over_targets(
    model: Any,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    target_positions: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int,
) -> LossSum:
    """Cross-entropy of predicting `targets` from the hidden states at `target_positions` (indices into the
    flattened row: position p predicts token p + 1), the output layer run `chunk_tokens` positions at a time."""
    hidden, head = _at_targets(model, input_ids, position_ids, target_positions)
    if head is None:  # the plain path: `hidden` are the logits already
        loss, correct = _chunk_loss(torch.nn.Identity(), hidden, targets)
        return LossSum(loss, correct)
    if torch.is_grad_enabled() and hidden.requires_grad and _fusable(head):
        liger = liger_loss(hidden.device)
        if liger is not None:
            result = liger(head.weight, hidden, targets)
            return LossSum(result.loss, (result.predicted_tokens.detach() == targets).sum())
        loss, hits = _FusedLinearCrossEntropy.apply(hidden, head.weight, targets, chunk_tokens)
        return LossSum(loss, hits)
    total = hidden.new_zeros((), dtype=torch.float32)
    correct = torch.zeros((), dtype=torch.long, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            loss, hits = checkpoint(_chunk_loss, head, hidden[part], targets[part], use_reentrant=False)
        else:
            loss, hits = _chunk_loss(head, hidden[part], targets[part])
        total = total + loss
        correct = correct + hits
    return LossSum(total, correct)


def _chunk_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


def target_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor,
    target_positions: torch.Tensor,
    targets: torch.Tensor,
    chunk_tokens: int,
) -> torch.Tensor:
    """The log-probability of each target (fp32, one per target), for DPO's per-sequence sums: the output layer
    runs `chunk_tokens` positions at a time, each chunk's logits recomputed in the backward pass (as the loss's
    non-fused path does), so no more than one chunk of logits is alive at once."""
    hidden, head = _at_targets(model, input_ids, position_ids, target_positions)
    if head is None:  # the plain path: `hidden` are the logits already
        return _chunk_logprobs(torch.nn.Identity(), hidden, targets)
    parts = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        part = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logprobs, head, hidden[part], targets[part], use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(head, hidden[part], targets[part]))
    return torch.cat(parts) if parts else hidden.new_zeros((0,), dtype=torch.float32)


def target_positions(labels: list[int]) -> tuple[list[int], list[int]]:
    """(positions, targets) of a packed row's labels: position p predicts labels[p + 1] where that is a target."""
    positions = [p for p in range(len(labels) - 1) if labels[p + 1] != IGNORE_INDEX]
    return positions, [labels[p + 1] for p in positions]
