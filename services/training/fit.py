"""Which instance types a base model fits for LoRA training: a memory rule, deliberately simple.

GPU: the frozen weights in bf16 (2 bytes a parameter; fp32, 4 bytes, where the GPU has no bf16), times
LORA_OVERHEAD for the adapters, their gradients and Adam states and the allocator's slack, plus ACTIVATIONS_GIB
for activations at a modest batch and sequence length and the CUDA context; it must not exceed the GPU's memory.
CPU: only tiny models (at most CPU_MAX_PARAMETERS), in fp32, within half the instance's memory.
"""

from __future__ import annotations

from typing import Any

from services.training.catalog import BaseModelEntry, Catalog, InstanceType

GIB = 2**30
LORA_OVERHEAD = 1.25
ACTIVATIONS_GIB = 2.0
CPU_MAX_PARAMETERS = 100_000_000


def memory_needed_gib(model: BaseModelEntry, bytes_per_parameter: int = 2) -> float:
    return model.parameters * bytes_per_parameter / GIB * LORA_OVERHEAD + ACTIVATIONS_GIB


def fits(model: BaseModelEntry, instance: InstanceType) -> bool:
    if instance.gpus == 0:
        return model.parameters <= CPU_MAX_PARAMETERS and memory_needed_gib(model, 4) <= instance.memory_gib / 2
    return memory_needed_gib(model, 2 if instance.bf16 else 4) <= instance.gpu_memory_gib


def fitting_instances(catalog: Catalog, model: BaseModelEntry) -> list[InstanceType]:
    """Every type the model fits, cheapest first."""
    return sorted((i for i in catalog.instance_types if fits(model, i)), key=lambda i: i.price_per_hour)


def default_instance(catalog: Catalog, model: BaseModelEntry) -> InstanceType | None:
    """The model's catalogued smallest type where the rule agrees, else the cheapest that fits."""
    named = catalog.instance(model.min_instance_type)
    if named is not None and fits(model, named):
        return named
    fitting = fitting_instances(catalog, model)
    return fitting[0] if fitting else None


def public_catalog(catalog: Catalog) -> dict[str, Any]:
    """GET /api/catalog: the catalog, each model with its memory need and the instance types it fits."""
    body = catalog.model_dump()
    for entry, model in zip(body["models"], catalog.models, strict=True):
        entry["memory_needed_gib"] = round(memory_needed_gib(model), 1)
        entry["fits_instance_types"] = [i.id for i in fitting_instances(catalog, model)]
    return body
