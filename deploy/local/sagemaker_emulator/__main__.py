"""`python -m deploy.local.sagemaker_emulator [--host H] [--port P] [--workdir DIR] [--max-jobs N]`

Arguments override the SAGEMAKER_EMULATOR_* environment. On SIGTERM or SIGINT it stops its jobs (SIGTERM
to each job's process group, SIGKILL after the grace) before it exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from shared.logging import configure_logging

from .app import create_app
from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.sagemaker_emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="interface to listen on (SAGEMAKER_EMULATOR_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (SAGEMAKER_EMULATOR_PORT, 4567)")
    parser.add_argument("--workdir", type=Path, help="jobs' files and records (SAGEMAKER_EMULATOR_WORKDIR, "
                                                     ".data/sagemaker)")
    parser.add_argument("--max-jobs", type=int, help="jobs running at once (SAGEMAKER_EMULATOR_MAX_JOBS, 1)")
    args = parser.parse_args(argv)

    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    configure_logging("sagemaker-emulator", settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
