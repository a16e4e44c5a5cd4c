"""What SageMaker publishes: "SageMaker Training Job State Change" through EventBridge (its `detail` is the
DescribeTrainingJob response's shape). shared/envelope.py turns such an EventBridge event into an envelope of type
TRAINING_JOB_STATE_CHANGED; the training service's reconciler builds the same payload from DescribeTrainingJob.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from shared.contracts.event import Event

TRAINING_JOB_STATE_CHANGED = "sagemaker.training_job.state_changed"
EVENTBRIDGE_SOURCE = "aws.sagemaker"
EVENTBRIDGE_DETAIL_TYPE = "SageMaker Training Job State Change"


class TrainingJobStateChanged(Event):
    """The fields the platform reads; everything else SageMaker sends is kept (extra="allow")."""

    TYPE = TRAINING_JOB_STATE_CHANGED
    model_config = ConfigDict(extra="allow", frozen=True)
    TrainingJobName: str
    TrainingJobStatus: str
    SecondaryStatus: str | None = None
    SecondaryStatusTransitions: list[dict[str, Any]] = []
    FailureReason: str | None = None
    ModelArtifacts: dict[str, Any] | None = None
    FinalMetricDataList: list[dict[str, Any]] = []
    # Epoch milliseconds in EventBridge's detail and in the reconciler's payload; kept as sent (the handler reads
    # only numbers), so an unexpected time format never turns a state change into a poison message.
    TrainingStartTime: Any = None
    LastModifiedTime: Any = None
    TrainingTimeInSeconds: Any = None
