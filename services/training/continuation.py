"""Where a new job starts: a catalog base model, or beyond it one of the caller's own adapters.

- `model` = one of the caller's `ft:` models (a succeeded job's fine_tuned_model, its model not deleted): training
  starts from that job's adapter (its model.tar.gz) on the same base; the new job's `model` is that `ft:` name.
- `model` = `ft:...:ckpt-step-N` (a checkpoint's fine_tuned_model_checkpoint, as OpenAI names them), or beyond
  OpenAI `from_checkpoint` = a checkpoint id (`ftckpt_...`, GET /v1/fine_tuning/jobs/{id}/checkpoints): training
  starts from that checkpoint's adapter.

The adapter travels to the trainer as the `adapter` input channel; its own LoRA settings (rank, alpha, target
modules) are the new job's. Another user's model or checkpoint, or one that does not exist, is a 404: it does
not exist for this caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.training import artifacts
from services.training.catalog import BaseModelEntry
from services.training.deps import Deps
from services.training.models import CreateJob, EstimateRequest, Hyperparameters, Job
from shared.errors import InvalidRequest, NotFound

CHECKPOINT_MARK = ":ckpt-step-"
LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_dropout", "target_modules")


@dataclass(frozen=True)
class Start:
    model: str  # what the new job's `model` says
    base: BaseModelEntry
    adapter_uri: str
    source: Job
    checkpoint: str | None = None  # the checkpoint's id, when it starts from one


def _no_model(model: str) -> NotFound:
    return NotFound(f"The model {model!r} does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


def _owner_of(name: str) -> str | None:
    """The user id an `ft:{base}:{user}:{suffix}:{id}` name carries (the base may hold colons: counted from the
    end)."""
    fields = name.split(CHECKPOINT_MARK)[0].split(":")
    return fields[-3] if len(fields) >= 5 else None


async def resolve_start(cmd: CreateJob | EstimateRequest, user_id: str, deps: Deps) -> Start | None:
    """The adapter the job starts from, or None for a plain base model."""
    if getattr(cmd, "from_checkpoint", None):
        return await _from_checkpoint_id(cmd, user_id, deps)
    if not cmd.model.startswith("ft:"):
        return None
    if _owner_of(cmd.model) != user_id:
        raise _no_model(cmd.model)
    name, _, step = cmd.model.partition(CHECKPOINT_MARK)
    jobs = await deps.jobs.all_for_user(user_id)
    if step:
        source = next((j for j in jobs if (j.fine_tuned_model or j.fine_tuned_model_name()) == name), None)
        found = await artifacts.find_checkpoint(deps, source, step=int(step)) if source and step.isdigit() else None
        if source is None or found is None:
            raise _no_model(cmd.model)
        return Start(cmd.model, _base(deps, source, cmd.model), found[1], source,
                     artifacts.checkpoint_id(source.job_id, found[0]))
    source = next((j for j in jobs if j.fine_tuned_model == name and j.status == "succeeded"), None)
    if source is None or source.model_deleted_at is not None or not source.model_artifact:
        raise _no_model(cmd.model)
    return Start(cmd.model, _base(deps, source, cmd.model), source.model_artifact, source)


async def _from_checkpoint_id(cmd: CreateJob | EstimateRequest, user_id: str, deps: Deps) -> Start:
    checkpoint = str(getattr(cmd, "from_checkpoint", ""))
    missing = NotFound(f"No checkpoint found with id {checkpoint!r}.", param="from_checkpoint",
                       code="checkpoint_not_found")
    if not checkpoint.startswith("ftckpt_"):
        raise missing
    for source in await deps.jobs.all_for_user(user_id):  # newest first; only the caller's jobs are looked in
        if not source.sagemaker_job_name or source.model_deleted_at is not None:
            continue
        found = await artifacts.find_checkpoint(deps, source, checkpoint=checkpoint)
        if found is None:
            continue
        named = f"{source.fine_tuned_model or source.fine_tuned_model_name()}{CHECKPOINT_MARK}{found[0]}"
        if cmd.model not in (named, source.model, source.base):
            raise InvalidRequest(f"Checkpoint {checkpoint} is of a job on {source.model}; model must be that "
                                 f"(or {named}), not {cmd.model!r}.", param="model", code="model_mismatch")
        return Start(named, _base(deps, source, cmd.model), found[1], source, checkpoint)
    raise missing


def _base(deps: Deps, source: Job, model: str) -> BaseModelEntry:
    base = deps.catalog.model(source.base)
    if base is None:
        raise InvalidRequest(f"{model} was trained on {source.base}, which is no longer offered for fine-tuning.",
                             param="model", code="model_not_available")
    return base


def with_adapter_settings(requested: Hyperparameters, start: Start) -> Hyperparameters:
    """The request's hyperparameters with the starting adapter's LoRA settings: they are the adapter's own (the
    trainer keeps them); asking for others is a 400."""
    source: dict[str, Any] = start.source.hyperparameters
    for name in LORA_SETTINGS:
        asked = getattr(requested, name)
        if asked != "auto" and name in source and asked != source[name]:
            raise InvalidRequest(f"{name} is the starting adapter's own ({source[name]!r}) when training "
                                 f"continues from {start.model}; leave it 'auto'.",
                                 param=f"hyperparameters.{name}", code="invalid_hyperparameter")
    kept = {name: source[name] for name in LORA_SETTINGS if name in source}
    return requested.model_copy(update=kept)
