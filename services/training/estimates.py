"""What a job will cost before it runs, and the budget cap that keeps it there.

tokens per epoch  = the file's estimated tokens (files' validation report), less the validation split, and at most
                    max_seq_length per example (longer examples are truncated)
trained tokens    = tokens per epoch x n_epochs
steps             = ceil(training examples / (batch_size x gradient_accumulation_steps)) x n_epochs, or with "auto"
                    batch size ceil(tokens per epoch / tokens_per_step) x n_epochs
duration          = startup overhead + trained tokens / tokens per second   (measured runs: trained tokens x the
                    measured seconds per token, which already holds the overhead); with gradient checkpointing
                    the tokens per second of a run without it x CHECKPOINTING_SPEED (LoRA's ~4N FLOPs a token
                    become ~6N with the forward pass run again); on N instances (instance_count) the cluster's:
                    the per-instance figure x N x PARALLEL_EFFICIENCY (as on a multi-GPU type without a figure
                    of its own: the model's one-GPU figure x GPUs x PARALLEL_EFFICIENCY)
memory            = the memory model's plan on the instance (fit.py): checkpointing, tokens per pass, peak GiB;
                    with several processes also how they share the work ("strategy": ddp, fsdp, fsdp_qlora)
cost              = duration in hours x the on-demand price of the whole cluster (the instance's x instance_count:
                    SageMaker bills BillableTimeInSeconds on every instance); spot: that x (1 - spot discount)
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from services.training import fit
from services.training.catalog import BaseModelEntry, Catalog, InstanceType, throughput_key
from services.training.hyperparameters import max_seq_length, memory_settings, steps_per_epoch
from services.training.models import Hyperparameters
from shared.errors import InvalidRequest
from trainer_image.llmt_trainer.memory import method_compute_factor, min_row_tokens, sequences_per_example

MIN_BUDGET_RUNTIME_S = 60  # a budget that buys less than this is refused: SageMaker would only start and stop
MAX_SPOT_WAIT_S = 48 * 3600
CHECKPOINTING_SPEED = 4 / 6


class ThroughputReader(Protocol):
    async def seconds_per_token(self, model: str, instance_type: str) -> float | None: ...


def choose_instance(catalog: Catalog, base: BaseModelEntry, instance_type: str | None,
                    requested: Hyperparameters | None = None, count: int = 1) -> InstanceType:
    """The caller's type (`count` of them: the job's cluster, priced together) if the model fits it (at the job's
    max_seq_length and memory settings), else a 400 saying what would fit; none given: the default fit."""
    requested = requested or Hyperparameters()
    # A DPO pass holds a pair (both sequences): its rows are what must fit (the trainer's memory.min_row_tokens).
    seq = min_row_tokens(max_seq_length(requested, base), requested.method)
    settings = memory_settings(requested)
    if instance_type is None:
        instance = fit.default_instance(catalog, base, seq, count=count, **settings)
        if instance is None:
            raise InvalidRequest(f"No instance type in the catalog fits {base.id} at max_seq_length {seq} with these "
                                 "settings; try load_in_4bit: true or a shorter max_seq_length.", param="model",
                                 code="model_not_available")
    else:
        named = catalog.cluster(instance_type, count)
        if named is None:
            raise InvalidRequest(f"Unknown instance type {instance_type!r}; GET /api/catalog lists them.",
                                 param="instance_type", code="invalid_instance_type")
        instance = named
    planned = fit.plan_on(base, instance, seq, **settings)
    if planned is None:  # only a type the caller named: the default is one that fits
        message = fit.does_not_fit_message(catalog, base, instance, seq, load_in_4bit=settings["load_in_4bit"],
                                           gradient_checkpointing=settings["gradient_checkpointing"])
        if requested.method == "dpo":
            message += (f" (DPO: a pass holds a preference pair, both sequences, so {seq} tokens: twice "
                        "max_seq_length.)")
        raise InvalidRequest(message, param="instance_type", code="instance_too_small")
    if requested.merge_adapter is True and planned.strategy == "fsdp":
        raise InvalidRequest(f"{base.id} fits {instance.id} only sharded over its GPUs (FSDP), and merge_adapter needs "
                             "the whole model in one process: leave merge_adapter off here, or merge in a job on "
                             "larger GPUs.", param="hyperparameters.merge_adapter", code="invalid_hyperparameter")
    return instance


# A cluster of several training processes (instance_count > 1, or a multi-GPU instance type) does not scale quite
# linearly: each step waits for its slowest process and the gradients' all-reduce (LoRA's few MB) or, sharded, the
# weights' all-gathers. A planning figure, as the catalog's throughputs are; measured runs replace it.
PARALLEL_EFFICIENCY = 0.9


def _single_gpu_figure(catalog: Catalog, base: BaseModelEntry, instance: InstanceType) -> float | None:
    """A multi-GPU type without its own figure: the model's figure on a one-GPU type of the same family (ml.g5.*)."""
    family = instance.id.rsplit(".", 1)[0] + "."
    for other in catalog.instance_types:
        if other.gpus == 1 and other.id.startswith(family):
            figure = catalog.tokens_per_second(base.id, other.id)
            if figure:
                return figure * instance.gpus
    return None


async def tokens_per_second(catalog: Catalog, base: BaseModelEntry, instance: InstanceType,
                            measured: ThroughputReader | None) -> tuple[float, int, str]:
    """(tokens/s of the whole cluster, startup overhead to add, where the figure came from)."""
    if measured is not None:
        seconds = await measured.seconds_per_token(base.id, throughput_key(instance.id, instance.count))
        if seconds:
            return 1 / seconds, 0, "measured"
    per_instance = catalog.tokens_per_second(base.id, instance.id)
    source = "catalog"
    if not per_instance and instance.gpus > 1:
        per_instance, source = _single_gpu_figure(catalog, base, instance), "catalog, per GPU x GPUs"
    if not per_instance:
        per_instance, source = catalog.default_tokens_per_second * max(instance.gpus, 1), "default"
    figure = per_instance * instance.count
    if instance.processes > 1:
        figure *= PARALLEL_EFFICIENCY
    return figure, catalog.startup_overhead_s, source


# DPO (issue 15): each preference pair is two sequences (the prompt with the chosen reply, and with the rejected one;
# the file's token count holds the prompt and the longer reply once: twice that bounds them), and each sequence
# costs a reference forward pass (the adapter switched off) on top of the policy's forward and backward: the
# trainer's memory model says by how much (memory.method_compute_factor). Both count in the time and the price.
DPO_SEQUENCES_PER_EXAMPLE = sequences_per_example("dpo")
DPO_COMPUTE_FACTOR = method_compute_factor("dpo")


def estimate(*, catalog: Catalog, base: BaseModelEntry, instance: InstanceType, hyperparameters: dict[str, Any],
             examples: int, file_tokens: int | None, tokens_per_s: float, overhead_s: int, source: str,
             spot: bool, method: str = "supervised") -> dict[str, Any]:
    """The arithmetic, every input echoed beside the result."""
    hp = hyperparameters
    dpo = method == "dpo"
    if dpo and file_tokens is not None:
        file_tokens *= DPO_SEQUENCES_PER_EXAMPLE
    held_out = math.floor(examples * float(hp.get("validation_split", 0.0)))
    train_examples = max(examples - held_out, 0)
    cap = train_examples * int(hp["max_seq_length"]) * (DPO_SEQUENCES_PER_EXAMPLE if dpo else 1)
    if file_tokens is None:
        tokens_per_epoch, tokens_source = cap, "max_seq_length x examples (the file has no token count)"
    else:
        share = round(file_tokens * train_examples / examples) if examples else 0
        tokens_per_epoch, tokens_source = min(share, cap), "file validation"
    epochs = int(hp["n_epochs"])
    trained_tokens = tokens_per_epoch * epochs
    steps = steps_per_epoch(hp, train_examples, tokens_per_epoch) * epochs
    planned = fit.plan_on(base, instance, row_length(hp, method), **_memory_settings(hp))
    checkpointing = bool(planned and planned.gradient_checkpointing)
    if checkpointing and source != "measured":  # a measured figure already ran with the same plan
        tokens_per_s *= CHECKPOINTING_SPEED
    if dpo:
        tokens_per_s /= DPO_COMPUTE_FACTOR
    duration_s = math.ceil(overhead_s + trained_tokens / tokens_per_s)
    on_demand = duration_s / 3600 * instance.price_per_hour
    spot_cost = on_demand * (1 - catalog.spot_discount)
    return {
        "object": "fine_tuning.estimate", "model": base.id, "instance_type": instance.id,
        "instance_count": instance.count, "processes": instance.processes, "spot": spot,
        "method": method,
        "examples": examples, "training_examples": train_examples, "tokens_per_epoch": tokens_per_epoch,
        "trained_tokens": trained_tokens, "steps": steps, "estimated_duration_s": duration_s,
        "estimated_cost_usd": round(spot_cost if spot else on_demand, 4),
        "cost_on_demand_usd": round(on_demand, 4), "cost_spot_usd": round(spot_cost, 4),
        "currency": catalog.currency, "as_of": catalog.as_of,
        "memory": planned.as_dict() if planned else None,
        "inputs": {"file_tokens": file_tokens, "tokens_source": tokens_source, "n_epochs": epochs,
                   "batch_size": int(hp["batch_size"]), "tokens_per_step": hp.get("tokens_per_step"),
                   "gradient_accumulation_steps": int(hp.get("gradient_accumulation_steps", 1)),
                   "max_seq_length": int(hp["max_seq_length"]),
                   "validation_split": float(hp.get("validation_split", 0.0)),
                   "tokens_per_second": round(tokens_per_s, 3), "throughput_source": source,
                   "startup_overhead_s": overhead_s, "price_per_hour": instance.price_per_hour,
                   "price_per_instance_hour": instance.unit_price_per_hour,
                   "spot_discount": catalog.spot_discount,
                   "compute_factor": DPO_COMPUTE_FACTOR if dpo else 1.0,
                   "sequences_per_example": DPO_SEQUENCES_PER_EXAMPLE if dpo else 1},
        "hyperparameters": hp,
    }


def row_length(hp: dict[str, Any], method: str) -> int:
    """The longest row a pass must hold: one example, or for DPO a pair (both of its sequences)."""
    return min_row_tokens(int(hp["max_seq_length"]), method)


def _memory_settings(hp: dict[str, Any]) -> dict[str, Any]:
    """fit.plan_on's keywords from a resolved set (older jobs' sets lack the memory fields)."""
    return {"load_in_4bit": bool(hp.get("load_in_4bit", False)),
            "gradient_checkpointing": hp.get("gradient_checkpointing"), "lora_rank": int(hp.get("lora_r", 8)),
            "micro_batch_tokens": hp.get("micro_batch_tokens")}


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
