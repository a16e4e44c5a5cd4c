"""files' message entry: validates uploaded objects, removes deleted users' files, registers jobs' results."""

from __future__ import annotations

from services.files.bootstrap import build_deps
from services.files.event_handlers import ROUTES
from services.files.settings import Settings
from shared.worker import run_worker


def main() -> None:
    settings = Settings()
    run_worker("files", settings, settings.work_queue, settings.inbox_table,
               lambda aws: build_deps(aws, settings), ROUTES)


if __name__ == "__main__":
    main()
