"""What a successful run leaves: the LoRA adapter and the tokenizer in SM_MODEL_DIR, optionally the base model
with the adapter merged in (under merged/, or uploaded as its own archive), and training_summary.json.

All of it is written into a staging folder and moved into the model dir only once complete (publish_model):
SageMaker uploads the model dir at the end of every job, a stopped or failed one too, so a half-written adapter
there would go out as the job's model. The staging folder lies inside the model dir, which may be a mount of its
own: a move into it from elsewhere could cross filesystems and copy, one within it is a rename. A failed or
stopped run removes it (discard_unpublished_model); only a hard kill while saving (SIGKILL, once SageMaker's 120 s
of grace after SIGTERM are over) could leave it behind, and its name, `.incomplete`, says what it is."""

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
from .stops import StopSignal

log = logging.getLogger(__name__)

MERGED_DIR = "merged"
SUMMARY_FILE = "training_summary.json"


def save_model(model: Any, tokenizer: Any, paths: Paths, hp: Hyperparameters, base_model: str,
               trainable_state: dict[str, Any] | None = None) -> None:
    """The adapter and the tokenizer (and the merged model) into the staging folder. `trainable_state`: the LoRA
    weights gathered whole from FSDP's shards (distributed.full_trainable_state), saved instead of the model's own
    (rank 0 of a sharded run; merge_adapter is refused there, device_plan.py)."""
    staging = paths.model_staging_dir
    # The adapter records where its base model came from: name the model, not the container's channel path.
    model.peft_config["default"].base_model_name_or_path = base_model
    staging.mkdir(parents=True, exist_ok=True)
    if trainable_state is None:
        model.save_pretrained(staging)
    else:
        model.save_pretrained(staging, state_dict=trainable_state)
    tokenizer.save_pretrained(staging)
    if hp.merge_adapter:
        merged_dir = staging / MERGED_DIR
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        log.info("merged model saved to %s", MERGED_DIR)
        if hp.merged_model_uri:
            publish_merged_model(merged_dir, hp.merged_model_uri, paths.model_dir.parent)
            shutil.rmtree(merged_dir)


def write_summary(paths: Paths, summary: dict[str, Any]) -> None:
    """Into the staging folder: it travels with the adapter (publish_model copies it beside the metrics too)."""
    text = json.dumps(summary, indent=2) + "\n"
    (paths.model_staging_dir / SUMMARY_FILE).write_text(text, encoding="utf-8")


def publish_model(paths: Paths, stop: StopSignal) -> None:
    """Move the finished model from the staging folder into the model dir, then copy its summary beside the
    metrics. From here on the run is complete: a stop signal is only noted (the process then ends as a success),
    so that the renames are never cut short and what they moved is never taken back."""
    stop.deferred = True
    staging = paths.model_staging_dir
    for entry in sorted(staging.iterdir()):
        target = paths.model_dir / entry.name
        _remove(target)  # published by an earlier attempt of this job, interrupted right after publishing
        entry.replace(target)
    staging.rmdir()
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths.model_dir / SUMMARY_FILE, paths.output_data_dir / SUMMARY_FILE)
    log.info("model published to %s", paths.model_dir)


def discard_unpublished_model(paths: Paths) -> None:
    """What a failed or stopped run (or an earlier attempt of this job) staged never reaches the model dir."""
    shutil.rmtree(paths.model_staging_dir, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
