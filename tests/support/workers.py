"""Run a service's worker on its real queue from a test, until the queue is idle or a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _service(name: str) -> tuple[Any, Any, Any]:
    if name == "files":
        from services.files.bootstrap import build_deps
        from services.files.event_handlers import ROUTES
        from services.files.settings import Settings
    else:
        from services.training.bootstrap import build_deps  # type: ignore[assignment]
        from services.training.settings import Settings  # type: ignore[assignment]
        from services.training.worker import ROUTES  # type: ignore[assignment]
    return Settings(), build_deps, ROUTES


async def drain(service: str, until: Callable[[], bool] | None = None, deadline_s: float = 30,
                idle_polls: int = 1, batch_size: int = 10) -> None:
    """Handle `service`'s queue until it is idle and `until()` (when given) holds. `batch_size=1` handles one
    message at a time: moto does not make a conditional write atomic across concurrent requests, so a test whose
    claim rests on that condition must not race two handlers of one job against moto."""
    from shared.aws import AwsClients
    from shared.worker import build_consumer, dispatcher

    settings, build_deps, handlers = _service(service)
    aws = AwsClients(settings)
    try:
        deps = await build_deps(aws, settings)
        consumer = await build_consumer(aws, settings.work_queue, settings.inbox_table, dispatcher(handlers, deps),
                                         batch_size=batch_size)
        deadline = time.monotonic() + deadline_s
        while True:
            await consumer.run_until_idle(idle_polls=idle_polls)
            if until is None or until():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} worker did not reach the expected state in {deadline_s}s")
    finally:
        await aws.close()
