"""Deployments: the API's commands, and `advance`, the one step function that moves a deployment on.

`advance` looks at what SageMaker has and takes the next step (endpoints.py): creating -> in_service once the
endpoint, the base component and (for a fine-tuned model) its adapter component are InService; deleting ->
deleted once what only this deployment used is gone. The worker runs it when a deployment changes, the
reconciler every few seconds (and takes idle deployments down), an on-demand chat while it waits; each status
move is a conditional write, so running it twice, or in two places at once, is harmless.

A failed step takes down what the deployment had created (status `deleting`, with `failure_reason`), then the
deployment ends `failed`: a half-built endpoint never bills on unseen.
"""

from __future__ import annotations

import logging
import secrets
import time

from services.inference import endpoints
from services.inference.catalog import HostingInstance, ServableModel
from services.inference.deps import Deps
from services.inference.models import ACTIVE_DEPLOYMENT_STATUSES, CreateDeployment, Deployment, DeploymentStatus
from services.inference.served_models import ResolvedModel, resolve_model
from shared.contracts.inference_events import DEPLOYMENT_STATUS_EVENTS, DeploymentChanged
from shared.envelope import new_event
from shared.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)

CREATE_DEADLINE_S = 3600  # LMI on a large model: image pull, weights download and load; then give up


async def announce(deps: Deps, deployment: Deployment, status: DeploymentStatus, reason: str | None = None) -> None:
    event = DEPLOYMENT_STATUS_EVENTS[status](deployment_id=deployment.deployment_id, user_id=deployment.user_id,
                                             model=deployment.model, instance_type=deployment.instance_type,
                                             status=status, reason=reason)
    await deps.events.publish(new_event(event, user_id=deployment.user_id))


async def request_advance(deps: Deps, deployment_id: str) -> None:
    await deps.commands.send(new_event(DeploymentChanged(deployment_id=deployment_id)))


def _instance_for(resolved: ResolvedModel, requested: str | None, deps: Deps) -> HostingInstance:
    base = resolved.base
    if requested is None:
        default = deps.catalog.default_instance(base)
        if default is None:
            raise InvalidRequest(f"No hosting instance type in the catalog fits {base.id}.", param="instance_type",
                                 code="no_instance_fits")
        return default
    instance = deps.catalog.instance(requested)
    if instance is None:
        offered = ", ".join(i.id for i in deps.catalog.instance_types)
        raise InvalidRequest(f"Unknown instance_type {requested!r}; offered: {offered}.", param="instance_type",
                             code="invalid_instance_type")
    if not deps.catalog.fits(base, instance):
        fitting = ", ".join(i.id for i in deps.catalog.fitting_instances(base)) or "none"
        raise InvalidRequest(f"{base.id} does not fit {instance.id} for serving; types it fits: {fitting}.",
                             param="instance_type", code="instance_too_small")
    return instance


async def active_for_model(deps: Deps, user_id: str, model_id: str) -> Deployment | None:
    """The caller's deployment of this model that is creating or in service, if any."""
    for deployment in await deps.deployments.for_user(user_id):
        if deployment.model == model_id and deployment.status in ("creating", "in_service"):
            return deployment
    return None


async def create_deployment(body: CreateDeployment, user_id: str, deps: Deps,
                            on_demand: bool = False) -> tuple[Deployment, bool]:
    """(the deployment, True when new). An active deployment of the same model is answered as it is."""
    resolved = await resolve_model(body.model, user_id, deps)
    existing = await active_for_model(deps, user_id, resolved.model_id)
    if existing is not None:
        return existing, False
    instance = _instance_for(resolved, body.instance_type, deps)
    stack = endpoints.stack_name(user_id, resolved.base.id, instance.id)
    shared = [d for d in await deps.deployments.for_user(user_id)
              if d.endpoint_name == stack and d.status in ACTIVE_DEPLOYMENT_STATUSES]
    component = (endpoints.adapter_component_name(stack, resolved.model_id) if resolved.fine_tuned
                 else endpoints.base_component_name(stack))
    deployment = Deployment(
        deployment_id=f"dep-{secrets.token_hex(12)}", user_id=user_id, model=resolved.model_id,
        base_model=resolved.base.id, instance_type=instance.id, status="creating", endpoint_name=stack,
        component_name=component, adapter_artifact=resolved.fine_tuned.artifact if resolved.fine_tuned else None,
        idle_minutes=body.idle_minutes or deps.config.default_idle_minutes, price_per_hour=instance.price_per_hour,
        additional_price_per_hour=0.0 if shared else instance.price_per_hour, on_demand=on_demand,
        created_at=int(time.time()))
    await deps.deployments.create(deployment)
    await announce(deps, deployment, "creating")
    await request_advance(deps, deployment.deployment_id)
    log.info("deployment requested", extra={"deployment_id": deployment.deployment_id, "model": deployment.model,
                                            "instance_type": instance.id, "endpoint": stack})
    return deployment, True


async def get_deployment(deployment_id: str, user_id: str, deps: Deps) -> Deployment:
    deployment = await deps.deployments.get(deployment_id)
    if deployment is None or deployment.user_id != user_id:
        raise NotFound(f"No deployment {deployment_id!r}.", param="deployment_id")
    return deployment


async def delete_deployment(deployment_id: str, user_id: str, deps: Deps,
                            reason: str = "deleted by its owner") -> Deployment:
    deployment = await get_deployment(deployment_id, user_id, deps)
    await take_down(deployment, deps, reason)
    return await get_deployment(deployment_id, user_id, deps)


async def take_down(deployment: Deployment, deps: Deps, reason: str) -> None:
    if await deps.deployments.transition(deployment.deployment_id, "deleting", delete_reason=reason):
        await announce(deps, deployment, "deleting", reason)
        await request_advance(deps, deployment.deployment_id)


async def advance(deployment_id: str, deps: Deps) -> Deployment | None:
    deployment = await deps.deployments.get(deployment_id)
    if deployment is None:
        return None
    if deployment.status == "creating":
        await _advance_creating(deployment, deps)
    elif deployment.status == "deleting":
        await _advance_deleting(deployment, deps)
    return await deps.deployments.get(deployment_id)


async def _fail(deployment: Deployment, deps: Deps, reason: str) -> None:
    log.warning("deployment failed", extra={"deployment_id": deployment.deployment_id, "reason": reason})
    if await deps.deployments.transition(deployment.deployment_id, "deleting", failure_reason=reason,
                                         delete_reason="failed"):
        await announce(deps, deployment, "deleting", f"failed: {reason}")
        await request_advance(deps, deployment.deployment_id)


def _base_of(deployment: Deployment, deps: Deps) -> tuple[ServableModel, HostingInstance]:
    base = deps.catalog.model(deployment.base_model)
    instance = deps.catalog.instance(deployment.instance_type)
    if base is None or instance is None:
        raise LookupError(f"{deployment.base_model} on {deployment.instance_type} is no longer in the catalog")
    return base, instance


async def _advance_creating(deployment: Deployment, deps: Deps) -> None:
    if time.time() - deployment.created_at > CREATE_DEADLINE_S:
        await _fail(deployment, deps, f"not in service within {CREATE_DEADLINE_S // 60} minutes")
        return
    try:
        base, instance = _base_of(deployment, deps)
    except LookupError as exc:
        await _fail(deployment, deps, str(exc))
        return
    status, reason = await endpoints.ensure_endpoint(deployment, base, instance, deps)
    if status == "Failed":
        await _fail(deployment, deps, f"endpoint {deployment.endpoint_name}: {reason or 'failed'}")
        return
    if status != "InService":
        return
    status, reason = await endpoints.ensure_base_component(deployment, instance, deps)
    if status == "Failed":
        await _fail(deployment, deps, f"base model {deployment.base_model}: {reason or 'failed'}")
        return
    if status != "InService":
        return
    if deployment.adapter_artifact:
        status, reason = await endpoints.ensure_adapter_component(deployment, deps)
        if status == "Failed":
            await _fail(deployment, deps, f"adapter of {deployment.model}: {reason or 'failed'}")
            return
        if status != "InService":
            return
    now = int(time.time())
    if await deps.deployments.transition(deployment.deployment_id, "in_service", in_service_at=now,
                                         last_used_at=now):
        await announce(deps, deployment, "in_service")
        log.info("deployment in service", extra={"deployment_id": deployment.deployment_id,
                                                 "seconds": now - deployment.created_at})


async def _stack_still_used(deployment: Deployment, deps: Deps) -> bool:
    return any(d.deployment_id != deployment.deployment_id and d.endpoint_name == deployment.endpoint_name
               and d.status in ("creating", "in_service")
               for d in await deps.deployments.for_user(deployment.user_id))


async def _advance_deleting(deployment: Deployment, deps: Deps) -> None:
    if deployment.adapter_artifact and not await endpoints.remove_component(deployment.component_name, deps):
        return
    if not await _stack_still_used(deployment, deps):
        if not await endpoints.remove_component(endpoints.base_component_name(deployment.endpoint_name), deps):
            return
        if not await endpoints.remove_endpoint(deployment.endpoint_name, deps):
            return
    final: DeploymentStatus = "failed" if deployment.failure_reason else "deleted"
    moved = await deps.deployments.transition(deployment.deployment_id, final, deleted_at=int(time.time())) \
        if final == "deleted" else await deps.deployments.transition(deployment.deployment_id, "failed")
    if moved:
        await announce(deps, deployment, final, deployment.failure_reason or deployment.delete_reason)


async def take_down_idle(deps: Deps, now: float | None = None) -> list[str]:
    """In-service deployments unused for longer than their idle_minutes go down; their ids."""
    now = time.time() if now is None else now
    taken: list[str] = []
    for deployment in await deps.deployments.active():
        if deployment.status != "in_service":
            continue
        last = deployment.last_used_at or deployment.in_service_at or deployment.created_at
        if now - last > deployment.idle_minutes * 60:
            await take_down(deployment, deps, f"idle for {deployment.idle_minutes} minutes")
            taken.append(deployment.deployment_id)
    return taken
