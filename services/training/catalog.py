"""The catalog of base models and instance types (a dated data file, overridable with CATALOG_FILE). What GET
/api/catalog shows, with the fit rule applied to each model, is fit.public_catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class BaseModelEntry(BaseModel):
    id: str
    name: str
    hf_repo: str | None = None
    artifact_prefix: str | None = None  # a copy in our bucket, used as the training job's `model` channel
    parameters: int
    context_length: int
    license: str
    gated: bool = False
    lora_target_modules: str = "all-linear"
    # The recommended LoRA learning rate: what "auto" uses, times learning_rate_multiplier (catalog.json's note).
    learning_rate: float = 2e-4
    min_instance_type: str
    description: str = ""
    # The keys of the model's config.json the memory model reads (hidden_size, num_hidden_layers, vocab_size, ...).
    architecture: dict[str, Any]


class InstanceType(BaseModel):
    id: str
    vcpu: int
    gpus: int
    gpu_memory_gib: float
    memory_gib: float
    price_per_hour: float
    needs_quota_increase: bool
    bf16: bool = True  # V100s (p3) have no bfloat16: the fit rule counts fp32 weights there
    # A job's cluster: `count` instances of this type (InstanceCount), priced together (`price_per_hour` is the
    # cluster's once multiplied: times()). Never in the catalog file, never in its public listing.
    count: int = Field(default=1, ge=1, exclude=True)

    @property
    def processes(self) -> int:
        """Training processes of the cluster: one per GPU (torchrun's nproc_per_node), one per CPU instance."""
        return self.count * max(self.gpus, 1)

    @property
    def unit_price_per_hour(self) -> float:
        return self.price_per_hour / self.count

    def times(self, count: int) -> InstanceType:
        """`count` instances of this type as one job's cluster: its price is the cluster's."""
        base = self.unit_price_per_hour
        return self.model_copy(update={"count": count, "price_per_hour": base * count})


class Throughput(BaseModel):
    model: str
    instance_type: str
    tokens_per_second: float


class FrameworkImages(BaseModel):
    """Script mode's framework images (LAUNCH_MODE=script): the DLC URIs the sagemaker SDK's
    `image_uris.retrieve` builds, as `{account}.dkr.ecr.{region}.amazonaws.com/{repository:tag}`."""

    as_of: str
    note: str = ""
    gpu: str  # repository:tag of the GPU image
    cpu: str  # repository:tag of the CPU image
    accounts: dict[str, str]  # region -> the account that hosts the DLC repositories there

    def uri(self, region: str, gpu: bool) -> str | None:
        account = self.accounts.get(region)
        if account is None:
            return None
        return f"{account}.dkr.ecr.{region}.amazonaws.com/{self.gpu if gpu else self.cpu}"


def throughput_key(instance_type: str, count: int = 1) -> str:
    """What a measured throughput is kept under: the type, with the count where a job ran on several instances."""
    return instance_type if count == 1 else f"{instance_type}x{count}"


class Catalog(BaseModel):
    as_of: str
    currency: str
    prices_note: str = ""
    models: list[BaseModelEntry]
    instance_types: list[InstanceType]
    not_offered: list[dict[str, str]] = []
    architecture_note: str = ""
    spot_discount: float = 0.7  # planning figure for managed spot against on-demand
    spot_note: str = ""
    startup_overhead_s: int = 240  # provisioning, image and data download: billed, not training
    default_tokens_per_second: float = 250  # conservative, for a model and instance with no figure
    throughput_note: str = ""
    throughput: list[Throughput] = []
    framework_images: FrameworkImages | None = None

    @classmethod
    def load(cls, path: Path) -> Catalog:
        return cls.model_validate(json.loads(path.read_text()))

    def model(self, model_id: str) -> BaseModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def instance(self, instance_id: str) -> InstanceType | None:
        return next((i for i in self.instance_types if i.id == instance_id), None)

    def cluster(self, instance_id: str, count: int = 1) -> InstanceType | None:
        """A job's `count` instances of a type, priced together; None for a type the catalog does not list."""
        instance = self.instance(instance_id)
        return instance.times(count) if instance is not None else None

    def tokens_per_second(self, model_id: str, instance_id: str) -> float | None:
        return next((t.tokens_per_second for t in self.throughput
                     if t.model == model_id and t.instance_type == instance_id), None)
