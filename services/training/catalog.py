"""The catalog of base models and instance types (a dated data file, overridable with CATALOG_FILE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


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
    min_instance_type: str
    description: str = ""


class InstanceType(BaseModel):
    id: str
    vcpu: int
    gpus: int
    gpu_memory_gib: float
    memory_gib: float
    price_per_hour: float
    needs_quota_increase: bool


class Catalog(BaseModel):
    as_of: str
    currency: str
    prices_note: str = ""
    models: list[BaseModelEntry]
    instance_types: list[InstanceType]
    not_offered: list[dict[str, str]] = []

    @classmethod
    def load(cls, path: Path) -> Catalog:
        return cls.model_validate(json.loads(path.read_text()))

    def model(self, model_id: str) -> BaseModelEntry | None:
        return next((m for m in self.models if m.id == model_id), None)

    def public(self) -> dict[str, Any]:
        return self.model_dump()
