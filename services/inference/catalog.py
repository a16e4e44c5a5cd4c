"""The serving catalog (serving_catalog.json, a dated data file; SERVING_CATALOG_FILE overrides it): the base
models inference can serve, the hosting instance types with their prices, and which model fits which type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

GIB = 1024**3
DEMO_PARAMETERS = 100_000_000  # below this a model is a local demo: it runs on a CPU instance


class ServableModel(BaseModel):
    id: str
    name: str
    hf_repo: str | None = None
    artifact_prefix: str | None = None  # a copy in our bucket (the local demo model)
    parameters: int
    context_length: int
    gated: bool = False


class HostingInstance(BaseModel):
    id: str
    vcpu: int
    gpus: int
    gpu_memory_gib: float
    memory_gib: float
    price_per_hour: float


class ServingCatalog(BaseModel):
    as_of: str
    currency: str
    prices_note: str = ""
    fit_note: str = ""
    default_idle_minutes: int = 60
    models: list[ServableModel]
    instance_types: list[HostingInstance]

    @classmethod
    def load(cls, path: Path) -> ServingCatalog:
        return cls.model_validate(json.loads(path.read_text()))

    def model(self, model_id: str) -> ServableModel | None:
        return next((m for m in self.models if m.id == model_id), None)

    def instance(self, instance_id: str) -> HostingInstance | None:
        return next((i for i in self.instance_types if i.id == instance_id), None)

    def fits(self, model: ServableModel, instance: HostingInstance) -> bool:
        """bf16 weights + 20% (KV cache, activations) + 2 GiB runtime in 90% of the GPUs' memory; CPU types
        serve only demo-sized models (vLLM, LMI's backend, needs a GPU)."""
        if instance.gpus == 0:
            return model.parameters < DEMO_PARAMETERS
        need = model.parameters * 2 * 1.2 + 2 * GIB
        return need <= instance.gpu_memory_gib * GIB * 0.9

    def fitting_instances(self, model: ServableModel) -> list[HostingInstance]:
        return sorted((i for i in self.instance_types if self.fits(model, i)), key=lambda i: i.price_per_hour)

    def default_instance(self, model: ServableModel) -> HostingInstance | None:
        fitting = self.fitting_instances(model)
        return fitting[0] if fitting else None

    def public(self, on_demand: bool) -> dict[str, Any]:
        return {
            "as_of": self.as_of, "currency": self.currency, "prices_note": self.prices_note,
            "fit_note": self.fit_note, "default_idle_minutes": self.default_idle_minutes, "on_demand": on_demand,
            "instance_types": [i.model_dump() for i in self.instance_types],
            "models": [{"id": m.id, "name": m.name, "context_length": m.context_length,
                        "default_instance_type": (d.id if (d := self.default_instance(m)) else None),
                        "instance_types": [i.id for i in self.fitting_instances(m)]} for m in self.models],
        }
