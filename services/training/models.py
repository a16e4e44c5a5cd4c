"""training's types: the API's request bodies (CreateJob, EstimateRequest, Hyperparameters), a job as stored
(Job), and its projection of a file (FileView)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JobStatus = Literal["validating_files", "queued", "running", "pausing", "paused", "succeeded", "failed", "cancelled"]
# Over: nothing runs on SageMaker and nothing will unless its owner asks (failed and cancelled jobs can be retried,
# transitions.py). A paused job is at rest too, but not over.
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
AT_REST: frozenset[str] = TERMINAL | {"paused"}
MethodType = Literal["supervised", "dpo"]
DEFAULT_DPO_BETA = 0.1  # OpenAI's and TRL's default
# The most instances one job may ask for. SageMaker's own limit is the account's quota per instance type (the launch
# checks it, quotas.py); this bounds what one request can reserve before that.
MAX_INSTANCE_COUNT = 16

Auto = Literal["auto"]


Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt"]  # the trainer's SUPPORTED_SCHEDULERS
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$", max_length=128)]


class Hyperparameters(BaseModel):
    """OpenAI's three, plus the LoRA trainer's own; each "auto" until the launch resolves it (bounds: issue #5).
    `max_seq_length`'s upper bound is the model's context length, checked at creation."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"
    learning_rate: Auto | Annotated[float, Field(gt=0, le=1)] = "auto"  # beyond OpenAI: wins over the multiplier
    lora_r: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    lora_alpha: Auto | Annotated[int, Field(ge=1, le=1024)] = "auto"
    lora_dropout: Auto | Annotated[float, Field(ge=0, le=0.5)] = "auto"
    target_modules: Literal["auto", "all-linear"] | Annotated[list[ModuleName], Field(min_length=1, max_length=64)] \
        = "auto"
    max_seq_length: Auto | Annotated[int, Field(ge=16)] = "auto"
    warmup_ratio: Auto | Annotated[float, Field(ge=0, le=0.5)] = "auto"
    weight_decay: Auto | Annotated[float, Field(ge=0, le=1)] = "auto"
    gradient_accumulation_steps: Auto | Annotated[int, Field(ge=1, le=64)] = "auto"
    lr_scheduler: Auto | Scheduler = "auto"
    seed: Auto | Annotated[int, Field(ge=0, le=2147483647)] = "auto"
    packing: Auto | bool = "auto"
    validation_split: Auto | Annotated[float, Field(ge=0, le=0.5)] = "auto"
    merge_adapter: Auto | bool = "auto"  # also publish the base model with the adapter merged in
    # Memory and batching (the memory model decides each "auto" for the model and instance type, fit.py):
    tokens_per_step: Auto | Annotated[int, Field(ge=1, le=4_194_304)] = "auto"  # what "auto" batch_size means
    micro_batch_tokens: Auto | Annotated[int, Field(ge=16, le=1_048_576)] = "auto"  # tokens in one pass
    gradient_checkpointing: Auto | bool = "auto"  # on only when the rows do not fit without it
    load_in_4bit: Auto | bool = "auto"  # QLoRA ("auto": off; the 400 of a model that does not fit suggests it)
    # A checkpoint within an epoch at least this often (0: only at epoch ends and stops), so an interruption
    # loses at most this much training.
    checkpoint_interval_s: Auto | Annotated[int, Field(ge=0, le=86_400)] = "auto"
    # torch.compile each decoder layer (faster steps after a compile at the start; off: "auto")
    torch_compile: Auto | bool = "auto"

    method: ClassVar[str] = "supervised"  # the training method these hyperparameters are for


def layout_mismatch(method: str, example_type: str | None) -> str | None:
    """Why a file of `example_type` (chat, text, preference) cannot train with `method`; None when it can."""
    if method == "dpo" and example_type not in (None, "preference"):
        return (f"It holds {example_type} examples; DPO trains on preference pairs (prompt, chosen and rejected "
                "replies). Use method supervised for it, or upload a preference file.")
    if method != "dpo" and example_type == "preference":
        return ("It holds preference pairs, which train with method dpo ({\"type\": \"dpo\"}), not supervised "
                "fine-tuning.")
    return None


class DpoHyperparameters(Hyperparameters):
    """DPO's: the supervised ones and `beta`, how far the policy may move from the reference (OpenAI's bounds)."""

    beta: Auto | Annotated[float, Field(gt=0, le=2)] = "auto"
    method: ClassVar[str] = "dpo"


class SupervisedMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoMethod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(BaseModel):
    """OpenAI's `method`: {"type": "supervised", "supervised": {...}} or {"type": "dpo", "dpo": {...}};
    "reinforcement" is OpenAI's too, refused here with a clear 400 (commands.py)."""

    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: dict[str, Any] | None = None


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
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    integrations: list[Any] | None = None
    # Beyond OpenAI's body: where and how it runs, what it may cost, and "tell me first".
    instance_type: str | None = Field(default=None, min_length=1, max_length=64)
    # How many instances of it train together (SageMaker's InstanceCount): one process per GPU on each, data
    # parallel or sharded as the memory model says (fit.py); the price is the cluster's.
    instance_count: int = Field(default=1, ge=1, le=MAX_INSTANCE_COUNT)
    spot: bool = False
    max_cost_usd: float | None = Field(default=None, gt=0, le=100000)
    dry_run: bool = False
    # Beyond OpenAI: start from one of the caller's checkpoints (an id of GET .../jobs/{id}/checkpoints).
    from_checkpoint: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > 16:
                raise ValueError("metadata may hold at most 16 pairs")
            if any(len(k) > 64 for k in value):
                raise ValueError("metadata keys may be at most 64 characters")
        return value

    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"

    def requested_hyperparameters(self) -> Hyperparameters:
        """The method's hyperparameters (DPO's are a DpoHyperparameters); the deprecated top-level ones else."""
        if self.method and self.method.type == "dpo":
            return self.method.dpo.hyperparameters if self.method.dpo else DpoHyperparameters(
                **(self.hyperparameters.model_dump() if self.hyperparameters else {}))
        if self.method and self.method.supervised:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


class BudgetBody(BaseModel):
    """The optional body of resume and retry: a new budget cap for what follows."""

    model_config = ConfigDict(extra="forbid")
    max_cost_usd: float | None = Field(default=None, gt=0, le=100000)


class EstimateRequest(BaseModel):
    """`POST /api/estimates`: what a job would cost, from its training file's validation statistics."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=64)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    instance_type: str | None = Field(default=None, min_length=1, max_length=64)
    instance_count: int = Field(default=1, ge=1, le=MAX_INSTANCE_COUNT)  # as CreateJob's
    spot: bool = False
    from_checkpoint: str | None = Field(default=None, min_length=1, max_length=64)  # as CreateJob's

    def method_type(self) -> str:
        return self.method.type if self.method else "supervised"

    def requested_hyperparameters(self) -> Hyperparameters:
        """The method's hyperparameters (DPO's are a DpoHyperparameters); the deprecated top-level ones else."""
        if self.method and self.method.type == "dpo":
            return self.method.dpo.hyperparameters if self.method.dpo else DpoHyperparameters(
                **(self.hyperparameters.model_dump() if self.hyperparameters else {}))
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
    instance_count: int = 1  # SageMaker's InstanceCount (jobs from before multi-instance training: 1)
    spot: bool = False
    max_cost_usd: float | None = None
    model_artifact: str | None = None
    sagemaker_job_name: str | None = None
    correlation_id: str | None = None  # the creating request's id, carried into SageMaker's later events
    cancel_requested_at: int | None = None  # a running job asked to stop; `cancelled` once SageMaker says Stopped
    # Progress (reconciler.py, sagemaker_state.py, metrics_from_logs.py): SageMaker's SecondaryStatus, the last
    # metrics step seen in the job's log stream and the log timestamp (ms) to read on from, the estimated finish.
    secondary_status: str | None = None
    estimated_finish: int | None = None
    metrics_step: int | None = None
    metrics_log_ts: int | None = None
    relaunch_requested_at: int | None = None  # the reconciler re-enqueued a stuck launch then
    model_deleted_at: int | None = None  # its owner deleted the fine-tuned model (and so its artifacts)
    # Spend (limits.py): the most the job may cost, reserved in its user's usage while it is active (None: made
    # before the limits, nothing reserved), and what SageMaker billed once it ended; in micro-dollars.
    reserved_micros: int | None = None
    billed_micros: int | None = None  # every part's together
    # Training methods (issue 15): DPO or supervised; the catalog model under it (`model` may be an `ft:` model it
    # continues from: None for jobs from before, whose `model` is the base); the adapter it starts from (an `ft:`
    # model's artifact, or a checkpoint folder: S3 URIs) and the checkpoint's id.
    method: MethodType = "supervised"
    base_model: str | None = None
    start_adapter: str | None = None
    from_checkpoint: str | None = None
    # Its SageMaker training jobs, oldest first: the first, then one per resume or retry (parts.py). Empty for jobs
    # from before, whose one training job is named as the job.
    parts: list[dict[str, Any]] = []
    pause_requested_at: int | None = None
    paused_at: int | None = None
    budget_set_at_micros: int | None = None  # the job's bill when max_cost_usd was last set (a retry's new cap)

    @property
    def base(self) -> str:
        """The catalog model the job trains (on which the adapter sits)."""
        return self.base_model or self.model

    def training_job_name(self) -> str:
        """The SageMaker training job of its current (latest) part."""
        return str(self.parts[-1]["sagemaker_job_name"]) if self.parts else self.job_id

    def openai(self) -> dict[str, Any]:
        """The FineTuningJob object the openai SDK expects, every required key present."""
        return {
            "id": self.job_id, "object": "fine_tuning.job", "created_at": self.created_at_unix,
            "finished_at": self.finished_at, "model": self.model, "organization_id": f"org-{self.user_id}",
            "status": self.status, "fine_tuned_model": self.fine_tuned_model, "error": self.error,
            "hyperparameters": self.hyperparameters,
            "method": {"type": self.method, self.method: {"hyperparameters": self.hyperparameters}},
            "result_files": self.result_files, "trained_tokens": self.trained_tokens,
            "training_file": self.training_file, "validation_file": self.validation_file, "seed": self.seed,
            "estimated_finish": None if self.status in TERMINAL else self.estimated_finish,
            "integrations": [], "metadata": self.metadata,
            "user_provided_suffix": self.suffix,
            # Beyond OpenAI's object: where the result is.
            "instance_type": self.instance_type, "instance_count": self.instance_count,
            "model_artifact": self.model_artifact,
            "spot": self.spot, "max_cost_usd": self.max_cost_usd,
            "cancel_requested_at": self.cancel_requested_at, "secondary_status": self.secondary_status,
            "model_deleted_at": self.model_deleted_at,
            "base_model": self.base, "from_checkpoint": self.from_checkpoint, "paused_at": self.paused_at,
            "parts": public_parts(self),
            "billed_cost_usd": None if self.billed_micros is None else round(self.billed_micros / 1e6, 4),
        }

    def fine_tuned_model_name(self) -> str:
        """The model's name once it succeeds: `ft:{base}:{user}:{suffix}:{8 characters of the job id}`."""
        return f"ft:{self.base}:{self.user_id}:{self.suffix or ''}:{self.job_id.removeprefix('ftjob-')[:8]}"


def public_parts(job: Job) -> list[dict[str, Any]]:
    """Each part as the API shows it: a part that has ended says how, the current one has the job's status."""
    shown = []
    for i, part in enumerate(job.parts):
        current = i == len(job.parts) - 1
        micros = part.get("billed_micros")
        shown.append({
            "part": part["part"], "sagemaker_job_name": part["sagemaker_job_name"], "kind": part["kind"],
            "from_step": part.get("from_step"),
            "status": part.get("outcome") or (job.status if current else "ended"),
            "started_at": part.get("started_at"), "ended_at": part.get("ended_at"),
            "billed_seconds": part.get("billed_seconds"),
            "billed_cost_usd": None if micros is None else round(micros / 1e6, 4)})
    return shown


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
    estimated_tokens: int | None = None  # from the validation report: what estimates count

    @property
    def train_uri(self) -> str:
        """What the `train` channel reads: the normalised examples (files validated before they existed have
        none: their original chat JSONL, which the trainer reads too)."""
        return self.normalized_uri or self.s3_uri
