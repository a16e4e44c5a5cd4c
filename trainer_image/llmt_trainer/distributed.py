"""The ranks of a run that torchrun started (launch.py): the process group, how a step's rows are split between the
ranks, and the few collectives a step needs. A one-process run is World() and every function here is then a no-op.

Every rank loads the data, tokenizes, plans and builds the same schedule (packing.py: a pure function of the seed),
so no data is sent. Each optimizer step's rows are split across the ranks (split_rows: greedy by tokens); a rank
runs forward and backward over its rows dividing by the step's global divisor, then the LoRA gradients are summed
over the ranks (one all-reduce of one flat buffer: LoRA gradients are small; with FSDP the sharding's own
reduce-scatter does it), and every rank clips and steps identically. The update equals the one-process update for
the same global batch, up to the order of float sums. Dropout draws from a generator seeded per row (row_seed), so
any split of the rows (and a resumed run) draws the same masks.

Strategies (memory.distributed_plan decides, device_plan.py applies): "ddp", every rank a whole copy of the model;
"fsdp", the decoder layers' weights sharded across the world with torch's fully_shard (FSDP2), gathered a layer at
a time; "fsdp_qlora", the same over 4-bit weights. Only rank 0 writes (checkpoints, metrics, the model).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .launch import is_worker

log = logging.getLogger(__name__)

# Long: ranks other than 0 wait at a barrier while rank 0 saves (and may merge and upload) the model. A rank that
# fails makes torchrun end the others at once, so a long timeout never holds a failed run.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1
    backend: str = ""
    strategy: str = "ddp"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def sharded(self) -> bool:
        return self.distributed and self.strategy != "ddp"

    def with_strategy(self, strategy: str) -> World:
        return replace(self, strategy=strategy)

    def describe(self) -> str:
        if not self.distributed:
            return "world size 1 (one process)"
        hosts = self.size // max(1, self.local_size)
        how = "data parallel" if self.strategy == "ddp" else f"data parallel, weights sharded ({self.strategy})"
        return (f"world size {self.size} ({hosts} host{'s' * (hosts != 1)} x {self.local_size} "
                f"process{'es' * (self.local_size != 1)}), {how}, backend {self.backend}")


def start_world(env: Mapping[str, str] = os.environ) -> World:
    """This process's rank; the process group joined when there are several (gloo on CPU, nccl on CUDA, each rank
    on its own GPU: LOCAL_RANK)."""
    if not is_worker(env):
        return World()
    rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    size, local_size = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if size == 1:
        return World(local_rank=local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT,
                            device_id=torch.device("cuda", local_rank) if cuda else None)
    return World(rank, local_rank, size, local_size, backend)


def finish_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def split_rows(row_tokens: Sequence[int], size: int) -> list[list[int]]:
    """Each rank's rows (indices into the step's rows, ascending): greedy by tokens, the longest row first to the
    rank with the fewest tokens so far (ties: the lower rank, then the earlier row). Deterministic, so every rank
    computes the same split; a rank may get none when the step has fewer rows than ranks."""
    load = [0] * size
    parts: list[list[int]] = [[] for _ in range(size)]
    for index in sorted(range(len(row_tokens)), key=lambda i: (-row_tokens[i], i)):
        rank = min(range(size), key=lambda r: (load[r], r))
        parts[rank].append(index)
        load[rank] += row_tokens[index]
    return [sorted(part) for part in parts]


def row_seed(seed: int, step: int, index: int) -> int:
    """The random seed of row `index` of optimizer step `step`: the same whichever rank runs the row."""
    return ((seed * 1_000_003 + step) * 1_000_003 + index) % (2**63 - 1)


def seed_row(seed: int, step: int, index: int) -> None:
    """Seed every generator (CPU and CUDA) for the row's forward pass: LoRA dropout draws its masks from them."""
    torch.manual_seed(row_seed(seed, step, index))


def all_reduce_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum the parameters' gradients over the ranks in one all-reduce of one flat buffer (LoRA gradients are small);
    a rank without a gradient (no row in the step) contributes zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    buffer = torch.cat([g.reshape(-1).to(torch.float32) for g in grads])
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        size = grad.numel()
        param.grad = buffer[offset : offset + size].view_as(grad).to(grad.dtype)
        offset += size


def any_rank(world: World, device: torch.device, *flags: bool) -> list[bool]:
    """Each flag true on any rank (a MAX all-reduce; one small host sync)."""
    if not world.distributed:
        return list(flags)
    values = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def sum_over_ranks(world: World, values: torch.Tensor) -> torch.Tensor:
    """`values` summed over the ranks (a copy; the input is left as it is)."""
    total = values.clone()
    if world.distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def broadcast_object(world: World, value: Any) -> Any:
    """Rank 0's `value` on every rank (pickled; for small state such as a LoRA checkpoint)."""
    if not world.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(world: World, value: Any) -> list[Any]:
    if not world.distributed:
        return [value]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, value)
    return gathered


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The repeated blocks FSDP shards one by one (LlamaDecoderLayer, Qwen2DecoderLayer, ...)."""
    return [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]


def shard_model(model: Any, world: World) -> None:
    """FSDP2: each decoder layer's parameters (the frozen base weights and the LoRA ones) sharded across the world,
    gathered for its forward and backward; the decoder's own (embeddings, final norm) as one more group, the root.
    The output layer stays whole on every rank: loss.py runs the decoder and then uses the head's weight itself,
    chunk by chunk, outside any module's forward, where FSDP could not gather it. FSDP averages the gradients over
    the ranks (a sum would need PREMUL_SUM, which gloo lacks): the loop scales each rank's loss by the world size
    (gradient_scale), so the result is the sum all the same."""
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = decoder_layers(model)
    if not layers or not callable(getattr(base, "get_decoder", None)):
        raise RuntimeError(f"no decoder layers found in {type(model).__name__} to shard")
    for layer in layers:
        fully_shard(layer)
    fully_shard(base.get_decoder())


def gradient_scale(world: World) -> int:
    """What each rank's loss is multiplied by so that the ranks' gradients add up: FSDP's reduction averages."""
    return world.size if world.sharded else 1


def set_gradient_sync(model: Any, world: World, sync: bool) -> None:
    """FSDP: reduce-scatter the gradients only after the step's last micro-batch."""
    if world.sharded:
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_requires_gradient_sync(sync, recurse=False)


def full_trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) parameters by their state-dict names, whole and on the CPU: with FSDP each is gathered
    from its shards (a collective: every rank calls this, in the same order)."""
    from torch.distributed.tensor import DTensor

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    state: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if name in trainable:
            whole = value.full_tensor() if isinstance(value, DTensor) else value
            state[name] = whole.detach().contiguous().cpu()
    return state


def sharded_optimizer_state(model: Any, optimizer: Any) -> dict[str, Any]:
    """FSDP: the optimizer's whole state (keyed by parameter name), gathered on every rank, on the CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_optimizer_state_dict(model, optimizer, options=options))


def load_sharded_optimizer_state(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """FSDP: a whole optimizer state (sharded_optimizer_state's) back into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
