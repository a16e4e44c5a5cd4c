"""The catalog's tiny demo base model in the local bucket: built from a config on this machine, never downloaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL_ID = "llm-tuner/tiny-chat"
DEMO_MODEL_PREFIX = "base-models/llm-tuner-tiny-chat/"


def install_demo_model(data_dir: Path, bucket: str, env: dict[str, str] | None = None) -> None:
    """Build the tiny demo base model locally (no download) once, and put it in the bucket, where the
    catalog's `llm-tuner/tiny-chat` entry points the training job's `model` channel."""
    model_dir = data_dir / "models" / "tiny-chat"
    if not (model_dir / "config.json").exists():
        # A subprocess keeps torch out of the launcher's memory.
        subprocess.run([sys.executable, "-m", "trainer_image.demo_model", "--out", str(model_dir)],
                       cwd=ROOT, env=env, check=True)
    s3 = boto3.client("s3")
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, DEMO_MODEL_PREFIX + path.relative_to(model_dir).as_posix())
