"""The models inference serves: the catalog's base models, and each user's fine-tuned ones (its own projection
of training.job.succeeded, model_lifecycle.py). OpenAI's models API list and retrieve over both; another
user's model is a 404 everywhere, as if it did not exist."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from services.inference.catalog import ServableModel
from services.inference.deps import Deps
from services.inference.models import Deployment, FineTunedModel
from shared.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)

BASE_OWNER = "llm-tuner"
BASE_MODELS_CREATED = 1_735_689_600  # 2025-01-01: the catalog's base models have no creation time of ours


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str
    base: ServableModel
    fine_tuned: FineTunedModel | None = None


def _not_found(model_id: str) -> NotFound:
    return NotFound(f"The model '{model_id}' does not exist or you do not have access to it.", param="model",
                    code="model_not_found")


async def resolve_model(model_id: str, user_id: str, deps: Deps) -> ResolvedModel:
    base = deps.catalog.model(model_id)
    if base is not None:
        return ResolvedModel(model_id, base)
    tuned = await deps.models.get(model_id)
    if tuned is None or tuned.user_id != user_id or tuned.deleted:
        raise _not_found(model_id)
    base = deps.catalog.model(tuned.base_model)
    if base is None:
        raise InvalidRequest(f"{model_id}'s base model {tuned.base_model} cannot be served here.", param="model",
                             code="model_not_servable")
    return ResolvedModel(model_id, base, tuned)


def _deployment_view(deployment: Deployment | None) -> dict[str, Any] | None:
    if deployment is None:
        return None
    return {"id": deployment.deployment_id, "status": deployment.status, "instance_type": deployment.instance_type}


def _public(resolved: ResolvedModel, user_id: str, deployment: Deployment | None) -> dict[str, Any]:
    tuned = resolved.fine_tuned
    return {"id": resolved.model_id, "object": "model",
            "created": tuned.created_at if tuned else BASE_MODELS_CREATED,
            "owned_by": f"user-{user_id}" if tuned else BASE_OWNER,
            # Beyond OpenAI's object:
            "kind": "fine-tuned" if tuned else "base", "base_model": resolved.base.id if tuned else None,
            "job_id": tuned.job_id if tuned else None, "context_length": resolved.base.context_length,
            "deployment": _deployment_view(deployment)}


async def _current_deployments(deps: Deps, user_id: str) -> dict[str, Deployment]:
    """Each model's newest deployment that is not over."""
    current: dict[str, Deployment] = {}
    for deployment in await deps.deployments.for_user(user_id):
        if deployment.status in ("creating", "in_service", "deleting") and deployment.model not in current:
            current[deployment.model] = deployment
    return current


async def list_models(user_id: str, deps: Deps) -> list[dict[str, Any]]:
    current = await _current_deployments(deps, user_id)
    listed = [_public(ResolvedModel(m.id, m), user_id, current.get(m.id)) for m in deps.catalog.models]
    for tuned in await deps.models.for_user(user_id):
        base = deps.catalog.model(tuned.base_model)
        if base is not None and not tuned.deleted:
            listed.append(_public(ResolvedModel(tuned.model_id, base, tuned), user_id, current.get(tuned.model_id)))
    return listed


async def retrieve_model(model_id: str, user_id: str, deps: Deps) -> dict[str, Any]:
    resolved = await resolve_model(model_id, user_id, deps)
    current = await _current_deployments(deps, user_id)
    return _public(resolved, user_id, current.get(model_id))
