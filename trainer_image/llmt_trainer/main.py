"""The process: logging, the command line, the stop signals, and each outcome turned into an exit status
(0 done, 1 failed with the reason in the `failure` file, 143 stopped). finetune.py calls main()."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

import torch
from transformers.utils import logging as hf_logging

from . import contract
from .contract import EXIT_FAILED, Paths, write_failure
from .errors import TrainingError
from .hyperparameters import parse_cli_overrides
from .job import train
from .loop import StopSignal

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    # peft calls a transformers method that transformers 5 renamed; the warning is noise in the job log.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(contract.__doc__)
        return 0
    paths = Paths.from_env(os.environ)
    with contextlib.suppress(OSError):  # left by an earlier attempt of a restarted job
        paths.failure_file.unlink(missing_ok=True)
    stop = StopSignal()
    stop.install()
    log.info("fine-tune starting (torch %s)", torch.__version__)
    try:
        summary = train(paths, parse_cli_overrides(argv), stop)
    except TrainingError as exc:
        log.error("%s", exc)
        write_failure(paths, str(exc))
        return exc.exit_code
    except Exception as exc:
        traceback.print_exc()
        write_failure(paths, f"unexpected error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    log.info(
        "done: %d steps, final train loss %s, %.1f s; adapter saved to %s",
        summary["steps"], summary["final_train_loss"], summary["duration_s"], paths.model_dir,
    )  # fmt: skip
    return 0
