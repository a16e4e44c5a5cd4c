"""inference's reconciler: `python -m services.inference.reconciler` (the local cluster runs it as
"inference-reconciler"). Every `reconcile_interval_s` it advances each deployment that is not over
(deployments.advance: creating ones toward in_service, deleting ones toward deleted), and takes down the
in-service ones idle for longer than their idle_minutes, so one left on does not drain the account.

The deployments come from the table's sparse `status-index` GSI, never a Scan. Safe to run alongside the worker
and to repeat: every status move is a conditional write, every SageMaker call is idempotent by name."""

from __future__ import annotations

import asyncio
import logging
import signal

from services.inference.bootstrap import build_deps
from services.inference.deployments import advance, take_down_idle
from services.inference.deps import Deps
from services.inference.settings import Settings
from shared.aws import AwsClients
from shared.logging import configure_logging

log = logging.getLogger(__name__)


async def run_once(deps: Deps, now: float | None = None) -> list[str]:
    """One pass; the ids of the deployments taken down as idle."""
    idle = await take_down_idle(deps, now)
    for deployment in await deps.deployments.active():
        if deployment.status in ("creating", "deleting"):
            try:
                await advance(deployment.deployment_id, deps)
            except Exception:  # one deployment's trouble is its own: the others are still looked at
                log.exception("advancing a deployment failed", extra={"deployment_id": deployment.deployment_id})
    if idle:
        log.info("idle deployments taken down", extra={"deployments": idle})
    return idle


def main() -> None:
    settings = Settings()
    configure_logging("inference-reconciler", settings.log_level)
    stopping = asyncio.Event()

    async def run() -> None:
        aws = AwsClients(settings)
        try:
            deps = await build_deps(aws, settings)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping.set)
            log.info("reconciler started", extra={"interval_s": settings.reconcile_interval_s})
            while not stopping.is_set():
                try:
                    await run_once(deps)
                except Exception:
                    log.exception("reconcile pass failed; trying again next interval")
                try:
                    await asyncio.wait_for(stopping.wait(), timeout=settings.reconcile_interval_s)
                except TimeoutError:
                    pass
        finally:
            await aws.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
