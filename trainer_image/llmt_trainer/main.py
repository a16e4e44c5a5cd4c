"""The process: logging, the command line, the process layout (launch.py: this process, or torchrun over every
GPU of every host), the stop signals, and each outcome turned into an exit status (0 done, 1 failed with the reason
in the `failure` file, 143 stopped: contract.py says why 143). finetune.py calls main()."""

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
from .contract import EXIT_FAILED, EXIT_STOPPED, Paths, write_failure
from .distributed import World, finish_world, start_world
from .errors import TrainingError, TrainingStopped
from .gpu_check import require_usable_gpu
from .hyperparameters import parse_cli_overrides, read_hyperparameters_file
from .job import train
from .launch import relaunch_if_distributed
from .outputs import discard_unpublished_model
from .stops import StopRequested, StopSignal, stopped_message

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
    log.info("fine-tune starting (torch %s)", torch.__version__)
    _relaunch_if_distributed(paths, argv)  # becomes torchrun, or returns to run here
    stop = StopSignal()
    stop.install()
    return run(paths, argv, stop)


def _relaunch_if_distributed(paths: Paths, argv: Sequence[str]) -> None:
    try:
        hyperparameters = {**read_hyperparameters_file(paths.input_config_dir), **parse_cli_overrides(argv)}
    except TrainingError:
        return  # unreadable: run() fails here with the reason, in one process
    relaunch_if_distributed(paths.input_config_dir, hyperparameters, argv)


def run(paths: Paths, argv: Sequence[str], stop: StopSignal) -> int:
    """The job, and its outcome as the exit status. Whatever ends a run other than success, the model dir keeps
    nothing of it."""
    world = World()
    try:
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one process per host cleans its host's folders
            with contextlib.suppress(OSError):  # left by an earlier attempt of a restarted job
                paths.failure_file.unlink(missing_ok=True)
            discard_unpublished_model(paths)
        world = start_world(os.environ)
        require_usable_gpu(paths.input_config_dir, os.environ)
        summary = train(paths, parse_cli_overrides(argv), stop, world)
    except (StopRequested, Exception) as exc:
        stop.deferred = True  # the outcome is decided: a signal from now on cannot cut the clean-up short
        status, reason = _outcome(exc, stop)
        if world.main:
            discard_unpublished_model(paths)
        # Several processes: the first to fail says why (the others fail after it, their peer gone), so a failure
        # file already written by this host's first is kept. torchrun then ends the other ranks.
        write_failure(paths, reason, keep_existing="WORLD_SIZE" in os.environ)
        return status
    finish_world(world)
    if stop.received:
        log.warning("%s arrived while the finished model was being published: the run is complete", stop.received)
    log.info(
        "done: %d steps, final train loss %s, %.1f s; adapter saved to %s",
        summary["steps"], summary["final_train_loss"], summary["duration_s"], paths.model_dir,
    )  # fmt: skip
    return 0


def _outcome(exc: BaseException, stop: StopSignal) -> tuple[int, str]:
    """(exit status, FailureReason). After a stop signal, whatever ended the run is reported as the stop: the
    signal came first, and an error while stopping (or a library that turned the stop into its own error) must
    not turn a stopped job into a failed one."""
    if isinstance(exc, (StopRequested, TrainingStopped)):  # the signal's own, or the training loop's at a step
        reason, status = str(exc), EXIT_STOPPED
    elif stop.received:
        reason, status = f"{stopped_message(stop.received)} (while stopping: {type(exc).__name__}: {exc})", EXIT_STOPPED
    elif isinstance(exc, TrainingError):
        reason, status = str(exc), exc.exit_code
    else:
        traceback.print_exception(exc)
        reason, status = f"unexpected error: {type(exc).__name__}: {exc}", EXIT_FAILED
    if status == EXIT_STOPPED:
        log.warning("%s", reason)
    else:
        log.error("%s", reason)
    return status, reason
