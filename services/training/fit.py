"""Which instance types a base model fits for LoRA training, at which max_seq_length and with what settings: the
memory model (trainer_image/llmt_trainer/memory.py, the same module the trainer plans with) applied to each
catalog model's shape (its config.json's keys, catalog.json `architecture`) and each instance type's memory.

GPU: the GPU's memory, bf16 weights (fp32 on GPUs without bf16: V100), or 4-bit with QLoRA. A job trains with one
process per GPU on each of its instances (instance_count x gpus): data parallel (DDP) when the model fits one GPU,
else sharded (FSDP: each GPU holds its share of the weights): memory.distributed_plan, as the trainer decides.
CPU: only small models (at most CPU_MAX_PARAMETERS: beyond that a CPU trains too slowly to be worth paying for),
in fp32, within CPU_MEMORY_SHARE of the instance's memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.training.catalog import BaseModelEntry, Catalog, InstanceType
from trainer_image.llmt_trainer.memory import (
    CPU_MEMORY_SHARE,
    GIB,
    USABLE_SHARE,
    Architecture,
    Plan,
    distributed_plan,
    max_row_tokens,
    predict,
)

CPU_MAX_PARAMETERS = 100_000_000
AUTO_MAX_SEQ_LENGTH = 2048  # "auto" never asks for more than this, whatever the model's context


def architecture(model: BaseModelEntry) -> Architecture:
    return Architecture.from_config(model.architecture)


def default_max_seq_length(model: BaseModelEntry) -> int:
    return min(model.context_length, AUTO_MAX_SEQ_LENGTH)


def capacity_bytes(instance: InstanceType) -> float:
    if instance.gpus == 0:
        return instance.memory_gib * GIB * CPU_MEMORY_SHARE
    return instance.gpu_memory_gib * GIB


def dtype_bytes(instance: InstanceType) -> int:
    return 2 if instance.gpus and instance.bf16 else 4


@dataclass(frozen=True)
class ClusterPlan(Plan):
    """The plan of each training process, and how the job's processes share the work: "single" (one process),
    "ddp" (data parallel: every GPU holds the whole model) or "fsdp" (the frozen weights and the adapter sharded over
    the processes, each decoder layer gathered while it runs): memory.distributed_plan's choice, as the trainer
    makes it (device_plan.py)."""

    strategy: str = "single"
    processes: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "strategy": self.strategy, "processes": self.processes}


def plan_on(model: BaseModelEntry, instance: InstanceType, max_seq_length: int | None = None, *,
            load_in_4bit: bool = False, gradient_checkpointing: bool | None = None, lora_rank: int = 8,
            micro_batch_tokens: int | None = None) -> ClusterPlan | None:
    """The settings the trainer would choose on `instance` (its `count` instances: one process per GPU on each), or
    None where the model does not fit it. Data parallel where the model fits one GPU; else, on GPUs, sharded (FSDP).
    Sharded in 4-bit (FSDP with QLoRA) is not offered: the trainer refuses it (its 4-bit loading is for one GPU)."""
    if instance.gpus == 0 and (load_in_4bit or model.parameters > CPU_MAX_PARAMETERS):
        return None
    chosen = distributed_plan(architecture(model), capacity_bytes(instance), max(instance.gpus, 1), instance.count,
                              max_seq_length or default_max_seq_length(model), dtype_bytes=dtype_bytes(instance),
                              load_in_4bit=load_in_4bit, lora_rank=lora_rank,
                              gradient_checkpointing=gradient_checkpointing, row_tokens=micro_batch_tokens)
    if chosen is None:
        return None
    strategy, per_process = chosen
    if strategy == "fsdp_qlora" or (strategy == "fsdp" and instance.gpus == 0):  # FSDP is a GPU plan here
        return None
    processes = instance.processes
    return ClusterPlan(per_process.gradient_checkpointing, per_process.row_tokens, per_process.predicted,
                       strategy if processes > 1 else "single", processes)


def fits(model: BaseModelEntry, instance: InstanceType, max_seq_length: int | None = None, **settings: Any) -> bool:
    return plan_on(model, instance, max_seq_length, **settings) is not None


def fitting_instances(catalog: Catalog, model: BaseModelEntry, max_seq_length: int | None = None,
                      count: int = 1, **settings: Any) -> list[InstanceType]:
    """Every type the model fits (`count` of it), cheapest first."""
    clusters = (i.times(count) for i in catalog.instance_types)
    return sorted((i for i in clusters if fits(model, i, max_seq_length, **settings)), key=lambda i: i.price_per_hour)


def default_instance(catalog: Catalog, model: BaseModelEntry, max_seq_length: int | None = None,
                     count: int = 1, **settings: Any) -> InstanceType | None:
    """The model's catalogued smallest type where the memory model agrees, else the cheapest that fits (`count` of
    them: the job's cluster)."""
    named = catalog.cluster(model.min_instance_type, count)
    if named is not None and fits(model, named, max_seq_length, **settings):
        return named
    fitting = fitting_instances(catalog, model, max_seq_length, count, **settings)
    return fitting[0] if fitting else None


def longest_sequence(model: BaseModelEntry, instance: InstanceType, *, load_in_4bit: bool = False,
                     gradient_checkpointing: bool = False) -> int:
    """The longest max_seq_length (a row of one example) that fits, capped at the model's context; 0: none."""
    if instance.gpus == 0 and (load_in_4bit or model.parameters > CPU_MAX_PARAMETERS):
        return 0
    longest = max_row_tokens(architecture(model), capacity_bytes(instance) * USABLE_SHARE,
                             dtype_bytes=dtype_bytes(instance), load_in_4bit=load_in_4bit,
                             gradient_checkpointing=gradient_checkpointing)
    return min(longest, model.context_length)


def memory_table(model: BaseModelEntry, instance: InstanceType) -> dict[str, Any]:
    """For the catalog: the longest max_seq_length per way of training on this instance type."""
    qlora = instance.gpus > 0
    return {
        "capacity_gib": round(capacity_bytes(instance) / GIB, 1),
        "lora": {"max_seq_length": longest_sequence(model, instance),
                 "max_seq_length_with_checkpointing": longest_sequence(model, instance, gradient_checkpointing=True)},
        "qlora": None if not qlora else {
            "max_seq_length": longest_sequence(model, instance, load_in_4bit=True),
            "max_seq_length_with_checkpointing": longest_sequence(model, instance, load_in_4bit=True,
                                                                  gradient_checkpointing=True)},
    }


def does_not_fit_message(catalog: Catalog, model: BaseModelEntry, instance: InstanceType, max_seq_length: int,
                         *, load_in_4bit: bool, gradient_checkpointing: bool | None) -> str:
    """Why, by how much, and what would fit: QLoRA, checkpointing, a shorter max_seq_length, a larger type."""
    arch = architecture(model)
    need = predict(arch, max_seq_length, dtype_bytes=dtype_bytes(instance), load_in_4bit=load_in_4bit,
                   gradient_checkpointing=True)
    text = (f"{model.id} does not fit {instance.id} ({capacity_bytes(instance) / GIB:.0f} GiB) for LoRA training at "
            f"max_seq_length {max_seq_length}: it needs about {need.total / GIB:.1f} GiB even with gradient "
            "checkpointing.")
    hints = []
    if gradient_checkpointing is False and fits(model, instance, max_seq_length, load_in_4bit=load_in_4bit):
        hints.append("gradient_checkpointing 'auto' or true (it fits with it)")
    if not load_in_4bit and fits(model, instance, max_seq_length, load_in_4bit=True):
        hints.append("load_in_4bit: true (QLoRA fits)")
    longest = longest_sequence(model, instance, load_in_4bit=load_in_4bit, gradient_checkpointing=True)
    if longest >= 16:
        hints.append(f"max_seq_length {longest} or less")
    larger = fitting_instances(catalog, model, max_seq_length, load_in_4bit=load_in_4bit)
    if larger:
        hints.append(f"a larger instance type: {', '.join(i.id for i in larger[:3])}")
    return text + (" Try " + "; or ".join(hints) + "." if hints else "")


def public_catalog(catalog: Catalog) -> dict[str, Any]:
    """GET /api/catalog: the catalog, each model with its memory need at its default max_seq_length, the types it
    fits there (with the settings the trainer would choose) and, per type, the longest max_seq_length that fits."""
    body = catalog.model_dump()
    for entry, model in zip(body["models"], catalog.models, strict=True):
        seq = default_max_seq_length(model)
        least = predict(architecture(model), seq, gradient_checkpointing=True)
        entry["memory_needed_gib"] = round(least.total / GIB, 1)
        entry["memory_at_max_seq_length"] = seq
        fitting = fitting_instances(catalog, model, seq)
        entry["fits_instance_types"] = [i.id for i in fitting]
        entry["fit"] = {i.id: {**memory_table(model, i),
                               "plan": (p.as_dict() if (p := plan_on(model, i, seq)) else None)}
                        for i in catalog.instance_types}
    return body
