"""The SageMaker container layout a trainer run reads (contract.Paths.from_env), rooted in a test's folder."""

from __future__ import annotations

from pathlib import Path


def sagemaker_env(root: Path, model_dir: Path | None = None) -> dict[str, str]:
    """SM_* variables for a job under `root` (train channel root/train, outputs beside it); `model_dir`, when
    given, is the model channel."""
    env = {
        "SM_INPUT_CONFIG_DIR": str(root / "config"),
        "SM_CHANNEL_TRAIN": str(root / "train"),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
        "SM_CHECKPOINT_DIR": str(root / "checkpoints"),
    }
    if model_dir is not None:
        env["SM_CHANNEL_MODEL"] = str(model_dir)
    return env
