"""What a successful run leaves: the LoRA adapter and the tokenizer in SM_MODEL_DIR, optionally the base model
with the adapter merged in (under merged/, or uploaded as its own archive), and training_summary.json."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from .contract import Paths
from .hyperparameters import Hyperparameters

log = logging.getLogger(__name__)

MERGED_DIR = "merged"
SUMMARY_FILE = "training_summary.json"


def save_model(model: Any, tokenizer: Any, paths: Paths, hp: Hyperparameters, base_model: str) -> None:
    # The adapter records where its base model came from: name the model, not the container's channel path.
    model.peft_config["default"].base_model_name_or_path = base_model
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(paths.model_dir)
    tokenizer.save_pretrained(paths.model_dir)
    if hp.merge_adapter:
        merged_dir = paths.model_dir / MERGED_DIR
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        log.info("merged model saved to %s", merged_dir)
        if hp.merged_model_uri:
            publish_merged_model(merged_dir, hp.merged_model_uri, paths.model_dir.parent)
            shutil.rmtree(merged_dir)


def write_summary(paths: Paths, summary: dict[str, Any]) -> None:
    """In the model (it travels with the adapter) and in the output data (beside the metrics)."""
    text = json.dumps(summary, indent=2) + "\n"
    (paths.model_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")
    (paths.output_data_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")


def publish_merged_model(merged_dir: Path, uri: str, scratch: Path, client: Any = None) -> None:
    """Pack the merged model as merged-model.tar.gz (its files at the archive's root, as model.tar.gz holds the
    adapter's) and upload it to `uri` with the job's own credentials (SageMaker's execution role; the local
    emulator passes its endpoint). boto3's upload_file sends big archives in parallel multipart parts."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory(dir=scratch if scratch.is_dir() else None) as tmp:
        archive = Path(tmp) / "merged-model.tar.gz"
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:  # weights barely compress: favour speed
            for path in sorted(merged_dir.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(merged_dir)))
        if client is None:
            import boto3  # only merging jobs need it

            client = boto3.client("s3")
        try:
            client.upload_file(str(archive), bucket, key)
        except Exception as exc:
            raise RuntimeError(f"cannot upload the merged model to {uri}: {exc}") from exc
        log.info("merged model uploaded to %s (%d bytes)", uri, archive.stat().st_size)
