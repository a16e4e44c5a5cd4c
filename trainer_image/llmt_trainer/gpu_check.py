"""A GPU instance without usable CUDA fails at once, before the model is downloaded or loaded, instead of training
in fp32 on the CPU for hours at the GPU instance's price.

The instance type comes from resourceconfig.json's `current_instance_type`, which SageMaker writes into every
training container's /opt/ml/input/config. (SM_NUM_GPUS comes from the sagemaker-training toolkit, which this image
does not install, so on SageMaker it is not set.) The local SageMaker emulator runs GPU instance types on a CPU
machine on purpose and says so with LLMT_ALLOW_CPU_ON_GPU_INSTANCE=1 in the container's environment: the check
then only warns. Nothing else sets it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import GpuUnavailableError

log = logging.getLogger(__name__)

RESOURCE_CONFIG_FILE = "resourceconfig.json"
ALLOW_CPU_ON_GPU_INSTANCE_ENV = "LLMT_ALLOW_CPU_ON_GPU_INSTANCE"
# SageMaker training's NVIDIA GPU families (ml.<family>.<size>). services/training/catalog.json offers some of them;
# tests/unit/test_trainer_gpu.py checks that every catalog type with GPUs is in this list.
GPU_INSTANCE_FAMILIES = frozenset({
    "ml.g4dn", "ml.g5", "ml.g6", "ml.g6e", "ml.p3", "ml.p4d", "ml.p4de", "ml.p5", "ml.p5e", "ml.p5en",
})


def is_gpu_instance_type(instance_type: str) -> bool:
    return instance_type.rsplit(".", 1)[0] in GPU_INSTANCE_FAMILIES


def read_resource_config(input_config_dir: Path, if_unreadable: str) -> dict[str, Any]:
    """resourceconfig.json as SageMaker writes it into every training container (current_host, hosts,
    current_instance_type); {} outside SageMaker, or where it does not read (logged with `if_unreadable`, what the
    caller does then)."""
    path = input_config_dir / RESOURCE_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("cannot read %s (%s): %s", path, exc, if_unreadable)
        return {}
    return config if isinstance(config, dict) else {}


def current_instance_type(input_config_dir: Path) -> str | None:
    """The instance type SageMaker runs this container on; None outside SageMaker (no resourceconfig.json)."""
    value = read_resource_config(input_config_dir, "the instance type is unknown").get("current_instance_type")
    return value if isinstance(value, str) else None


def cuda_problem() -> str | None:
    """Why CUDA cannot be used, or None when it can: a device is visible and a tiny kernel runs on it (a torch
    build without kernels for this GPU's architecture, or a driver too old for it, passes is_available())."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is false: no GPU is visible, or its driver does not work"
    try:
        (torch.ones(1, device="cuda") * 2).item()
    except Exception as exc:  # RuntimeError from CUDA, AssertionError from a build without it
        return f"CUDA initialisation failed: {type(exc).__name__}: {exc}"
    return None


def require_usable_gpu(input_config_dir: Path, env: Mapping[str, str]) -> None:
    """Raise GpuUnavailableError on a GPU instance type where CUDA does not work (unless the emulator's opt-out)."""
    instance_type = current_instance_type(input_config_dir)
    if instance_type is None or not is_gpu_instance_type(instance_type):
        return
    problem = cuda_problem()
    if problem is None:
        log.info("instance %s: CUDA on %s", instance_type, torch.cuda.get_device_name())
        return
    if env.get(ALLOW_CPU_ON_GPU_INSTANCE_ENV) == "1":
        log.warning("instance %s has GPUs but CUDA is not usable (%s); training on the CPU because %s=1 "
                    "(the local SageMaker emulator's setting)", instance_type, problem, ALLOW_CPU_ON_GPU_INSTANCE_ENV)
        return
    raise GpuUnavailableError(
        f"instance type {instance_type} has GPUs, but CUDA is not usable in this container: {problem}. "
        "Stopped before loading the model rather than training on the CPU at GPU prices; the training image "
        "needs a CUDA build of torch that supports this GPU"
    )
