"""What a job will cost before it runs, and the budget cap that keeps it there.

tokens per epoch  = the file's estimated tokens (files' validation report), less the validation split, and at most
                    max_seq_length per example (longer examples are truncated)
trained tokens    = tokens per epoch x n_epochs
steps             = ceil(training examples / (batch_size x gradient_accumulation_steps)) x n_epochs
duration          = startup overhead + trained tokens / tokens per second   (measured runs: trained tokens x the
                    measured seconds per token, which already holds the overhead)
cost              = duration in hours x the instance's on-demand price; spot: that x (1 - spot discount)
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from services.training.catalog import BaseModelEntry, Catalog, InstanceType
from services.training.fit import default_instance, fits, fitting_instances
from shared.errors import InvalidRequest

MIN_BUDGET_RUNTIME_S = 60  # a budget that buys less than this is refused: SageMaker would only start and stop
MAX_SPOT_WAIT_S = 48 * 3600


class ThroughputReader(Protocol):
    async def seconds_per_token(self, model: str, instance_type: str) -> float | None: ...


def choose_instance(catalog: Catalog, base: BaseModelEntry, instance_type: str | None) -> InstanceType:
    """The caller's type if the model fits it, else a 400 naming one that does; none given: the default fit."""
    fallback = default_instance(catalog, base)
    if instance_type is None:
        if fallback is None:
            raise InvalidRequest(f"No instance type in the catalog fits {base.id}.", param="model",
                                 code="model_not_available")
        return fallback
    instance = catalog.instance(instance_type)
    if instance is None:
        raise InvalidRequest(f"Unknown instance type {instance_type!r}; GET /api/catalog lists them.",
                             param="instance_type", code="invalid_instance_type")
    if not fits(base, instance):
        names = ", ".join(i.id for i in fitting_instances(catalog, base)) or "none"
        raise InvalidRequest(f"{base.id} does not fit {instance_type} for LoRA training; use "
                             f"{fallback.id if fallback else 'another model'} (fits: {names}).",
                             param="instance_type", code="instance_too_small")
    return instance


async def tokens_per_second(catalog: Catalog, base: BaseModelEntry, instance: InstanceType,
                            measured: ThroughputReader | None) -> tuple[float, int, str]:
    """(tokens/s, startup overhead to add, where the figure came from)."""
    if measured is not None:
        seconds = await measured.seconds_per_token(base.id, instance.id)
        if seconds:
            return 1 / seconds, 0, "measured"
    listed = catalog.tokens_per_second(base.id, instance.id)
    if listed:
        return listed, catalog.startup_overhead_s, "catalog"
    return catalog.default_tokens_per_second, catalog.startup_overhead_s, "default"


def estimate(*, catalog: Catalog, base: BaseModelEntry, instance: InstanceType, hyperparameters: dict[str, Any],
             examples: int, file_tokens: int | None, tokens_per_s: float, overhead_s: int, source: str,
             spot: bool) -> dict[str, Any]:
    """The arithmetic, every input echoed beside the result."""
    hp = hyperparameters
    held_out = math.floor(examples * float(hp.get("validation_split", 0.0)))
    train_examples = max(examples - held_out, 0)
    cap = train_examples * int(hp["max_seq_length"])
    if file_tokens is None:
        tokens_per_epoch, tokens_source = cap, "max_seq_length x examples (the file has no token count)"
    else:
        share = round(file_tokens * train_examples / examples) if examples else 0
        tokens_per_epoch, tokens_source = min(share, cap), "file validation"
    epochs = int(hp["n_epochs"])
    trained_tokens = tokens_per_epoch * epochs
    per_step = int(hp["batch_size"]) * int(hp.get("gradient_accumulation_steps", 1))
    steps = math.ceil(train_examples / per_step) * epochs if train_examples else 0
    duration_s = math.ceil(overhead_s + trained_tokens / tokens_per_s)
    on_demand = duration_s / 3600 * instance.price_per_hour
    spot_cost = on_demand * (1 - catalog.spot_discount)
    return {
        "object": "fine_tuning.estimate", "model": base.id, "instance_type": instance.id, "spot": spot,
        "examples": examples, "training_examples": train_examples, "tokens_per_epoch": tokens_per_epoch,
        "trained_tokens": trained_tokens, "steps": steps, "estimated_duration_s": duration_s,
        "estimated_cost_usd": round(spot_cost if spot else on_demand, 4),
        "cost_on_demand_usd": round(on_demand, 4), "cost_spot_usd": round(spot_cost, 4),
        "currency": catalog.currency, "as_of": catalog.as_of,
        "inputs": {"file_tokens": file_tokens, "tokens_source": tokens_source, "n_epochs": epochs,
                   "batch_size": int(hp["batch_size"]),
                   "gradient_accumulation_steps": int(hp.get("gradient_accumulation_steps", 1)),
                   "max_seq_length": int(hp["max_seq_length"]),
                   "validation_split": float(hp.get("validation_split", 0.0)),
                   "tokens_per_second": round(tokens_per_s, 3), "throughput_source": source,
                   "startup_overhead_s": overhead_s, "price_per_hour": instance.price_per_hour,
                   "spot_discount": catalog.spot_discount},
        "hyperparameters": hp,
    }


def budget_stopping_condition(max_cost_usd: float | None, instance: InstanceType, spot: bool,
                              max_runtime_s: int) -> dict[str, int]:
    """SageMaker bills run time at most at the on-demand price (spot is never dearer), so capping the run time at
    budget / on-demand price caps the bill. Spot jobs also need MaxWaitTimeInSeconds >= MaxRuntimeInSeconds."""
    runtime = max_runtime_s
    if max_cost_usd is not None:
        runtime = min(runtime, math.floor(max_cost_usd / instance.price_per_hour * 3600))
        if runtime < MIN_BUDGET_RUNTIME_S:
            raise InvalidRequest(f"max_cost_usd {max_cost_usd} buys {runtime} s of {instance.id} "
                                 f"(${instance.price_per_hour}/h); at least {MIN_BUDGET_RUNTIME_S} s are needed.",
                                 param="max_cost_usd", code="budget_too_small")
    condition = {"MaxRuntimeInSeconds": runtime}
    if spot:
        condition["MaxWaitTimeInSeconds"] = max(runtime, min(2 * runtime, MAX_SPOT_WAIT_S))
    return condition
