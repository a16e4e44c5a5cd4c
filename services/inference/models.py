"""inference's types: what it stores (FineTunedModel, Deployment, Evaluation) and the API's request bodies
(ChatRequest, CreateDeployment, CreateEvaluation). The public JSON shapes are each record's `public()`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DeploymentStatus = Literal["creating", "in_service", "deleting", "deleted", "failed"]
ACTIVE_DEPLOYMENT_STATUSES = ("creating", "in_service", "deleting")
EvaluationStatus = Literal["queued", "running", "succeeded", "failed"]


class FineTunedModel(BaseModel):
    """A fine-tuned model as inference knows it, from training.job.succeeded."""

    model_id: str
    user_id: str
    base_model: str
    job_id: str
    artifact: str  # s3://.../model.tar.gz: the adapter at the archive's root
    created_at: int
    training_file: str | None = None
    validation_file: str | None = None
    deleted: bool = False


class Deployment(BaseModel):
    deployment_id: str
    user_id: str
    model: str
    base_model: str
    instance_type: str
    status: DeploymentStatus
    endpoint_name: str
    component_name: str  # the inference component a chat invokes: the adapter's, or the base's
    adapter_artifact: str | None = None  # fine-tuned models: the job's model.tar.gz
    idle_minutes: int
    price_per_hour: float
    additional_price_per_hour: float
    on_demand: bool = False
    created_at: int
    in_service_at: int | None = None
    last_used_at: int | None = None
    deleted_at: int | None = None
    failure_reason: str | None = None
    delete_reason: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.deployment_id, "object": "deployment", "model": self.model, "base_model": self.base_model,
                "instance_type": self.instance_type, "status": self.status, "failure_reason": self.failure_reason,
                "price_per_hour": self.price_per_hour, "additional_price_per_hour": self.additional_price_per_hour,
                "idle_minutes": self.idle_minutes, "created_at": self.created_at,
                "in_service_at": self.in_service_at, "last_used_at": self.last_used_at,
                "deleted_at": self.deleted_at, "delete_reason": self.delete_reason,
                "endpoint_name": self.endpoint_name, "on_demand": self.on_demand}


class ModelSummary(BaseModel):
    model: str
    exact_match: float
    loss: float | None = None
    examples: int


class Evaluation(BaseModel):
    evaluation_id: str
    user_id: str
    models: list[str]
    file: str
    max_examples: int
    status: EvaluationStatus
    created_at: int
    job_id: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    error: str | None = None
    summary: list[ModelSummary] = []
    results_key: str | None = None  # the per-example results, JSON in the bucket

    def public(self, results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        body = {"id": self.evaluation_id, "object": "evaluation", "status": self.status, "models": self.models,
                "file": self.file, "job_id": self.job_id, "max_examples": self.max_examples,
                "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
                "error": self.error, "summary": [s.model_dump() for s in self.summary]}
        if results is not None:
            body["results"] = results
        return body


# --- request bodies ---------------------------------------------------------------------------------------------

class CreateDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    instance_type: str | None = Field(default=None, min_length=1, max_length=64)
    idle_minutes: int | None = Field(default=None, ge=5, le=7 * 24 * 60)


class CreateEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1, max_length=4)
    file: str = Field(min_length=1, max_length=64)
    max_examples: int = Field(default=50, ge=1, le=500)

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[str]) -> list[str]:
        if len(set(models)) != len(models):
            raise ValueError("each model may appear once")
        return models


Role = Literal["system", "developer", "user", "assistant", "tool"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ToolCallFunction(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    arguments: str


class ToolCall(BaseModel):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)
    refusal: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    include_obfuscation: bool | None = None  # the SDK may send it; nothing to obfuscate here


class ChatRequest(BaseModel):
    """`POST /v1/chat/completions` as the openai SDK sends it. Parameters OpenAI has but this server cannot honour
    are refused by name (UNSUPPORTED), never silently ignored; unknown ones are refused too (extra="forbid")."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=1024)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    stop: str | list[Annotated[str, Field(min_length=1, max_length=256)]] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    # Accepted and not acted on: they change nothing in the answer.
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    prompt_cache_retention: str | None = None
    # OpenAI's, and refused with a clear 400 when set to anything that would change the answer (chat.py).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[Any] | None = None
    function_call: Any = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        if isinstance(value, str) and not value:
            raise ValueError("a stop sequence may not be empty")
        return value


class FileView(BaseModel):
    """inference's projection of a file (files' events): what an evaluation needs to read it."""

    file_id: str
    user_id: str
    status: Literal["uploaded", "processed", "error", "deleted"]
    purpose: str
    filename: str
    example_type: str | None = None
    normalized_uri: str | None = None
    examples: int | None = None
