"""training's message entry: launch commands, the files projection, SageMaker's state changes."""

from __future__ import annotations

from services.training.bootstrap import build_deps
from services.training.handlers import EVENT_HANDLERS
from services.training.settings import Settings
from shared.worker import run_worker


def main() -> None:
    settings = Settings()
    run_worker("training", settings, settings.work_queue, settings.inbox_table,
               lambda aws: build_deps(aws, settings), EVENT_HANDLERS)


if __name__ == "__main__":
    main()
