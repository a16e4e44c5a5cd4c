"""files' message entry: validates uploaded objects, removes deleted users' files, registers jobs' results; and, on
a schedule beside the queue, aborts direct uploads older than UPLOAD_MAX_AGE_S (releasing their quota)."""

from __future__ import annotations

import asyncio

from services.files.bootstrap import build_deps
from services.files.deps import Deps
from services.files.event_handlers import ROUTES
from services.files.settings import Settings
from services.files.upload_reservations import sweep_periodically
from shared.aws import AwsClients
from shared.worker import run_worker

_sweeps: set[asyncio.Task[None]] = set()  # held, so the running sweep is not garbage-collected


async def deps_and_sweep(aws: AwsClients, settings: Settings) -> Deps:
    """The worker's dependencies, with the upload sweep started beside the consumer on the same loop (it stops
    with the process: asyncio.run cancels it when the consumer has stopped)."""
    deps = await build_deps(aws, settings)
    sweep = asyncio.create_task(sweep_periodically(deps, settings.upload_sweep_interval_s))
    _sweeps.add(sweep)
    sweep.add_done_callback(_sweeps.discard)
    return deps


def main() -> None:
    settings = Settings()
    run_worker("files", settings, settings.work_queue, settings.inbox_table,
               lambda aws: deps_and_sweep(aws, settings), ROUTES)


if __name__ == "__main__":
    main()
