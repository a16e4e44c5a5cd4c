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


class TrainingStopped(TrainingError):
    exit_code = EXIT_STOPPED
