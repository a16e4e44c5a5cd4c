"""The trainer's expected failures: each one's message is the job's FailureReason, its exit code the process's."""

from __future__ import annotations

from .contract import EXIT_FAILED, EXIT_STOPPED


class TrainingError(Exception):
    """An expected failure: its message is the job's FailureReason."""

    exit_code = EXIT_FAILED


class HyperparameterError(TrainingError):
    pass


class DataError(TrainingError):
    pass


class ModelLoadError(TrainingError):
    pass


class GpuUnavailableError(TrainingError):
    """A GPU instance whose CUDA does not work: training there would burn GPU hours on the CPU."""


class TrainingStopped(TrainingError):
    """The training loop's stop, raised at a safe point after a deferred signal (the checkpoint written). A stop in
    any other phase is stops.StopRequested, raised by the signal handler itself."""

    exit_code = EXIT_STOPPED
