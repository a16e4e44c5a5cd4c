from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatus = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | int = Field(default="auto")
    batch_size: Auto | int = Field(default="auto")
    learning_rate_multiplier: Auto | float = Field(default="auto")


class SupervisedMethod(BaseModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


class CreateJob(BaseModel):
    """`POST /v1/fine_tuning/jobs`, as the openai SDK sends it."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(default=None, min_length=1, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2147483647)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None

    def requested_hyperparameters(self) -> Hyperparameters:
        if self.method and self.method.supervised:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


class Job(BaseModel):
    job_id: str
    user_id: str
    created_at: str  # ISO-8601, the sort key of the user-index GSI
    created_at_unix: int
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any]
    suffix: str | None = None
    seed: int
    metadata: dict[str, str] | None = None
    status: JobStatus = "validating_files"
    error: dict[str, Any] | None = None
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result_files: list[str] = []
    instance_type: str
    model_artifact: str | None = None
    sagemaker_job_name: str | None = None
    correlation_id: str | None = None  # the creating request's id, carried into SageMaker's later events

    def openai(self) -> dict[str, Any]:
        """The FineTuningJob object the openai SDK expects, every required key present."""
        return {
            "id": self.job_id, "object": "fine_tuning.job", "created_at": self.created_at_unix,
            "finished_at": self.finished_at, "model": self.model, "organization_id": f"org-{self.user_id}",
            "status": self.status, "fine_tuned_model": self.fine_tuned_model, "error": self.error,
            "hyperparameters": self.hyperparameters,
            "method": {"type": "supervised", "supervised": {"hyperparameters": self.hyperparameters}},
            "result_files": self.result_files, "trained_tokens": self.trained_tokens,
            "training_file": self.training_file, "validation_file": self.validation_file, "seed": self.seed,
            "estimated_finish": None, "integrations": [], "metadata": self.metadata,
            "user_provided_suffix": self.suffix,
            # Beyond OpenAI's object: where the result is.
            "instance_type": self.instance_type, "model_artifact": self.model_artifact,
        }


class FileView(BaseModel):
    """training's own projection of a file, fed by `file.*` events."""

    file_id: str
    user_id: str
    status: Literal["uploaded", "processed", "error", "deleted"]
    purpose: str
    s3_uri: str
    examples: int | None = None
    error: str | None = None
    # Set once files has validated a fine-tune file: its examples in the one internal form the trainer reads.
    normalized_uri: str | None = None
    example_type: str | None = None  # chat, text or preference

    @property
    def train_uri(self) -> str:
        """What the `train` channel reads: the normalised examples (files validated before they existed have
        none: their original chat JSONL, which the trainer reads too)."""
        return self.normalized_uri or self.s3_uri
