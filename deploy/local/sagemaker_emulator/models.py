"""The training-job record and the shapes it takes on the wire (Describe, List, the EventBridge detail)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

# TrainingJobStatus
IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED = "InProgress", "Completed", "Failed", "Stopping", "Stopped"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, STOPPED})
JOB_STATUSES = frozenset({IN_PROGRESS, COMPLETED, FAILED, STOPPING, STOPPED})

# SecondaryStatus (only those this emulator passes through)
STARTING, DOWNLOADING, TRAINING, UPLOADING = "Starting", "Downloading", "Training", "Uploading"
MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"
MAX_WAIT_TIME_EXCEEDED = "MaxWaitTimeExceeded"  # a managed-spot job past MaxWaitTimeInSeconds (waits + runs)
INTERRUPTED = "Interrupted"  # a managed-spot job whose instance was reclaimed; it restarts from its checkpoints

# Request fields Describe echoes back unchanged.
ECHOED_FIELDS = (
    "HyperParameters", "AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig",
    "ResourceConfig", "VpcConfig", "StoppingCondition", "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining", "CheckpointConfig",
    "DebugHookConfig", "ExperimentConfig", "TensorBoardOutputConfig", "ProfilerConfig", "Environment",
    "RetryStrategy", "RemoteDebugConfig", "InfraCheckConfig",
)

Timestamp = Callable[[float], Any]


def now() -> float:
    """Job times are kept to the millisecond, so the API's seconds and the events' milliseconds agree."""
    return round(time.time(), 3)


def epoch_seconds(t: float) -> float:
    """The JSON protocol's timestamp: epoch seconds (botocore parses numbers as such)."""
    return t


def epoch_millis(t: float) -> int:
    """The EventBridge detail's timestamp, as SageMaker's own events carry it."""
    return round(t * 1000)


@dataclass
class TrainingJob:
    name: str
    arn: str
    request: dict[str, Any]  # the ECHOED_FIELDS of CreateTrainingJob, defaults filled in
    creation_time: float
    tags: list[dict[str, str]] = field(default_factory=list)
    status: str = IN_PROGRESS
    secondary_status: str = STARTING
    last_modified_time: float = 0.0
    transitions: list[dict[str, Any]] = field(default_factory=list)
    training_start_time: float | None = None
    training_end_time: float | None = None
    failure_reason: str | None = None
    model_artifacts: str | None = None
    final_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> {Value, Timestamp}
    unbilled_seconds: float = 0.0  # spot interruptions: from the interruption until training ran again

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def move_to(self, status: str, secondary: str, message: str, now: float) -> bool:
        """Record a status change; False when nothing changed (so no event is due)."""
        if (status, secondary) == (self.status, self.secondary_status) and self.transitions:
            return False
        if not self.transitions or self.transitions[-1]["Status"] != secondary:
            if self.transitions:
                self.transitions[-1]["EndTime"] = now
            self.transitions.append({"Status": secondary, "StartTime": now, "StatusMessage": message})
        if status in TERMINAL_STATUSES:
            self.transitions[-1]["EndTime"] = now
            self.training_end_time = now
        self.status, self.secondary_status, self.last_modified_time = status, secondary, now
        return True

    def record_metric(self, name: str, value: float, now: float) -> None:
        if math.isfinite(value):
            self.final_metrics[name] = {"Value": value, "Timestamp": now}

    def describe(self, timestamp: Timestamp = epoch_seconds) -> dict[str, Any]:
        """DescribeTrainingJob's response; `timestamp` picks the wire form of every time."""
        shape: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
            **copy.deepcopy(self.request),
            "CreationTime": timestamp(self.creation_time),
            "LastModifiedTime": timestamp(self.last_modified_time),
            "SecondaryStatusTransitions": [
                {key: timestamp(value) if key.endswith("Time") else value for key, value in t.items()}
                for t in self.transitions
            ],
        }
        if self.model_artifacts:
            shape["ModelArtifacts"] = {"S3ModelArtifacts": self.model_artifacts}
        if self.failure_reason:
            shape["FailureReason"] = self.failure_reason
        if self.training_start_time is not None:
            shape["TrainingStartTime"] = timestamp(self.training_start_time)
        if self.training_end_time is not None:
            shape["TrainingEndTime"] = timestamp(self.training_end_time)
            if self.training_start_time is not None:
                elapsed = self.training_end_time - self.training_start_time
                shape["TrainingTimeInSeconds"] = max(1, round(elapsed))
                shape["BillableTimeInSeconds"] = max(1, round(elapsed - self.unbilled_seconds))
        if self.final_metrics:
            shape["FinalMetricDataList"] = [
                {"MetricName": name, "Value": m["Value"], "Timestamp": timestamp(m["Timestamp"])}
                for name, m in self.final_metrics.items()
            ]
        return shape

    def summary(self) -> dict[str, Any]:
        """One TrainingJobSummary of ListTrainingJobs."""
        shape: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "CreationTime": epoch_seconds(self.creation_time),
            "LastModifiedTime": epoch_seconds(self.last_modified_time),
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
        }
        if self.training_end_time is not None:
            shape["TrainingEndTime"] = epoch_seconds(self.training_end_time)
        return shape

    def event_detail(self) -> dict[str, Any]:
        """The `detail` of a "SageMaker Training Job State Change" event: Describe's shape with epoch
        milliseconds and the tags as a map, as SageMaker sends it."""
        detail = self.describe(timestamp=epoch_millis)
        detail["Tags"] = {tag["Key"]: tag["Value"] for tag in self.tags}
        return detail

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingJob:
        return cls(**data)
