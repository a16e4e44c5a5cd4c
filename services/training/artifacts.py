"""What a job leaves in S3, for its owner: its checkpoints (OpenAI's `FineTuningJobCheckpoint` list) and short-lived
download links to its adapter, its merged model (with merge_adapter) and its results CSV.

Checkpoints are what the trainer saved to SM_CHECKPOINT_DIR as `checkpoint-{step}/`, which SageMaker (and the
local emulator) syncs to the job's CheckpointConfig.S3Uri, `training-jobs/{user}/{job}/checkpoints/`.
"""

from __future__ import annotations

import hashlib
import re
import string
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from services.training import results_file
from services.training.deps import Deps
from services.training.models import Job
from services.training.training_job_request import merged_model_key
from shared.errors import NotFound

LINK_TTL_S = 15 * 60
_ALPHABET = string.ascii_letters + string.digits
_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)/")
CHECKPOINT_STATE = "trainer_state.json"  # the trainer's checkpoints.py writes it into a folder last
_METRIC_KEYS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
                "full_valid_loss", "full_valid_mean_token_accuracy")


def checkpoint_prefix(job: Job) -> str:
    return f"training-jobs/{job.user_id}/{job.job_id}/checkpoints/"


def checkpoint_id(job_id: str, step: int) -> str:
    digest = hashlib.sha256(f"ckpt:{job_id}:{step}".encode()).digest()
    return "ftckpt_" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:24])


@dataclass
class _Found:
    step: int
    modified: int
    folder: str  # its S3 prefix, ending in "/"


async def _checkpoint_dirs(deps: Deps, job: Job) -> list[_Found]:
    """The job's checkpoint folders that are whole (their trainer_state.json, written last, is there)."""
    prefix = checkpoint_prefix(job)
    found: dict[int, tuple[int, str]] = {}
    whole: set[int] = set()
    paginator = deps.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=deps.launch.bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            match = _CHECKPOINT_DIR.match(obj["Key"][len(prefix):])
            if match:
                step = int(match.group(1))
                folder = prefix + match.group(0)
                found[step] = (max(found.get(step, (0, folder))[0], int(obj["LastModified"].timestamp())), folder)
                if obj["Key"].endswith("/" + CHECKPOINT_STATE):
                    whole.add(step)
    return [_Found(step, modified, folder) for step, (modified, folder) in sorted(found.items(), reverse=True)
            if step in whole]


async def checkpoint_steps(deps: Deps, job: Job) -> list[int]:
    """The steps of the job's checkpoints in S3, newest first."""
    return [found.step for found in await _checkpoint_dirs(deps, job)]


async def find_checkpoint(deps: Deps, job: Job, *, checkpoint: str | None = None,
                          step: int | None = None) -> tuple[int, str] | None:
    """(step, s3 URI of its folder) of the job's checkpoint with this id or step; None when it has none such."""
    for found in await _checkpoint_dirs(deps, job):
        if found.step == step or checkpoint == checkpoint_id(job.job_id, found.step):
            return found.step, f"s3://{deps.launch.bucket}/{found.folder}"
    return None


def _metrics(records: list[dict[str, Any]], step: int) -> dict[str, float]:
    record = next((r for r in reversed(records) if r.get("step") == step), {"step": step})
    if "train_mean_token_accuracy" not in record and "train_accuracy" in record:
        record = {**record, "train_mean_token_accuracy": record["train_accuracy"]}
    return {k: float(record[k]) for k in _METRIC_KEYS if isinstance(record.get(k), (int, float))}


async def list_checkpoints(job: Job, deps: Deps, limit: int, after: str | None) -> dict[str, Any]:
    """`SyncCursorPage[FineTuningJobCheckpoint]`, newest (highest step) first; `after` is a checkpoint id."""
    found = await _checkpoint_dirs(deps, job)
    ids = [checkpoint_id(job.job_id, f.step) for f in found]
    start = 0
    if after:
        if after not in ids:
            raise NotFound(f"No checkpoint found with id {after!r}.", param="after")
        start = ids.index(after) + 1
    page = found[start:start + limit]
    records = await results_file.load_metrics(deps.s3, job.model_artifact) if page and job.model_artifact else []
    model = job.fine_tuned_model or job.fine_tuned_model_name()
    data = [{"id": checkpoint_id(job.job_id, f.step), "object": "fine_tuning.job.checkpoint",
             "created_at": f.modified, "fine_tuned_model_checkpoint": f"{model}:ckpt-step-{f.step}",
             "fine_tuning_job_id": job.job_id, "step_number": f.step, "metrics": _metrics(records, f.step)}
            for f in page]
    return {"object": "list", "data": data, "has_more": start + limit < len(found),
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


async def _link(deps: Deps, bucket: str, key: str, name: str, kind: str, expires_at: int) -> dict[str, Any] | None:
    try:
        head = await deps.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    # A browser ignores `download` on a cross-origin link: the object itself says "save as <name>".
    params = {"Bucket": bucket, "Key": key, "ResponseContentDisposition": f'attachment; filename="{name}"'}
    url = await deps.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=LINK_TTL_S)
    return {"name": name, "kind": kind, "url": url, "bytes": int(head["ContentLength"]), "expires_at": expires_at}


async def artifact_links(job: Job, deps: Deps) -> dict[str, Any]:
    """Presigned GET links (15 minutes) to the adapter, the merged model and the results CSV, each only when it
    exists."""
    expires_at = int(time.time()) + LINK_TTL_S
    data: list[dict[str, Any]] = []
    if job.model_artifact and job.model_artifact.startswith("s3://"):
        bucket, _, key = job.model_artifact.removeprefix("s3://").partition("/")
        link = await _link(deps, bucket, key, "model.tar.gz", "adapter", expires_at)
        if link:
            data.append(link)
    if job.hyperparameters.get("merge_adapter"):  # the base model with the adapter merged in, its own archive
        link = await _link(deps, deps.launch.bucket, merged_model_key(job.user_id, job.job_id),
                           "merged-model.tar.gz", "merged_model", expires_at)
        if link:
            data.append(link)
    for file_id in job.result_files:
        key = f"files/{job.user_id}/{file_id}"
        link = await _link(deps, deps.launch.bucket, key, results_file.RESULTS_FILENAME, "results", expires_at)
        if link:
            data.append(link)
    return {"object": "list", "data": data}
