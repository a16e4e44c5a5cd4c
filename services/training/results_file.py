"""A succeeded job's results file: its step metrics as OpenAI's results CSV, written under the user's files.

The metrics come from `metrics.jsonl`, which the trainer writes to SM_OUTPUT_DATA_DIR and SageMaker (and the
local emulator) packs into `output.tar.gz` next to `model.tar.gz` before the job reports Completed: the exact
records, complete, with no dependence on log delivery. The file id is derived from the job id, so a repeated
Completed event rewrites the same object instead of leaving a second one behind; files registers it when it
hears `training.job.succeeded`.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import string
import tarfile
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from services.training.deps import S3
from shared.contracts.training_events import ResultFile
from shared.s3 import sse_args

log = logging.getLogger(__name__)

RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
# A DPO job's own, after OpenAI's five (empty cells in its accuracy columns): only when its records have them.
DPO_COLUMNS = ("reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps", "valid_reward_accuracy")
RESULTS_FILENAME = "step_metrics.csv"
METRICS_MEMBER = "metrics.jsonl"
MAX_OUTPUT_ARCHIVE_BYTES = 64 * 1024 * 1024  # the trainer's output data is a few KB; never hold more than this
_ALPHABET = string.ascii_letters + string.digits
# The CSV's column, and the metric names the trainer may report it under (first present wins).
_SOURCES = {"step": ("step",), "train_loss": ("train_loss",),
            "train_accuracy": ("train_accuracy", "train_mean_token_accuracy"),
            "valid_loss": ("valid_loss",), "valid_mean_token_accuracy": ("valid_mean_token_accuracy",)}


def result_file_id(job_id: str) -> str:
    digest = hashlib.sha256(f"results:{job_id}".encode()).digest()
    return "file-" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:24])


def results_csv(records: Iterable[dict[str, Any]]) -> str:
    """`step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy`, one row per logged step (an
    empty cell where the step did not report that metric); a DPO job's records add DPO_COLUMNS."""
    records = [record for record in records if "step" in record]
    dpo = any("reward_accuracy" in record for record in records)
    columns = RESULTS_COLUMNS + (DPO_COLUMNS if dpo else ())
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        row = []
        for column in columns:
            value = next((record[name] for name in _SOURCES.get(column, (column,)) if record.get(name) is not None),
                         "")
            row.append(value)
        writer.writerow(row)
    return out.getvalue()


def metrics_from_archive(archive: bytes) -> list[dict[str, Any]]:
    """The records of `metrics.jsonl` inside an `output.tar.gz` (read in memory, nothing extracted to disk;
    lines that are not JSON objects are skipped)."""
    records: list[dict[str, Any]] = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
        member = next((m for m in tar.getmembers()
                       if m.isfile() and m.name.rsplit("/", 1)[-1] == METRICS_MEMBER), None)
        stream = tar.extractfile(member) if member else None
        if stream is None:
            return records
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def output_archive(model_artifact: str) -> tuple[str, str] | None:
    """(bucket, key) of `output.tar.gz` beside a job's `s3://bucket/.../output/model.tar.gz`."""
    if not model_artifact.startswith("s3://") or not model_artifact.endswith("/model.tar.gz"):
        return None
    bucket, _, key = model_artifact.removeprefix("s3://").partition("/")
    return bucket, key.removesuffix("model.tar.gz") + "output.tar.gz"


async def load_metrics(s3: S3, model_artifact: str | None) -> list[dict[str, Any]]:
    location = output_archive(model_artifact) if model_artifact else None
    if location is None:
        return []
    bucket, key = location
    try:
        obj = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return []  # the job wrote no output data: a results file with the header only
        raise
    async with obj["Body"] as body:
        if obj.get("ContentLength", 0) > MAX_OUTPUT_ARCHIVE_BYTES:
            log.warning("output archive too large for results; skipped", extra={"key": key})
            return []
        archive = await body.read()
    try:
        return await asyncio.to_thread(metrics_from_archive, archive)
    except (tarfile.TarError, OSError, EOFError) as exc:
        log.warning("output archive unreadable; results without metrics", extra={"key": key, "error": str(exc)})
        return []


async def write_results(s3: S3, bucket: str, user_id: str, job_id: str, model_artifact: str | None,
                        kms_key_id: str | None = None) -> ResultFile:
    """Write the job's results CSV to `files/{user_id}/{file_id}`; the `result_file` of `training.job.succeeded`."""
    body = results_csv(await load_metrics(s3, model_artifact)).encode()
    file_id = result_file_id(job_id)
    key = f"files/{user_id}/{file_id}"
    await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv", **sse_args(kms_key_id))
    return ResultFile(file_id=file_id, s3_key=key, bytes=len(body), filename=RESULTS_FILENAME)


async def written_results(s3: S3, bucket: str, user_id: str, job_id: str) -> ResultFile | None:
    """The results file `write_results` wrote for the job, as it is in the bucket now (None: not there)."""
    file_id = result_file_id(job_id)
    key = f"files/{user_id}/{file_id}"
    try:
        head = await s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return None
    return ResultFile(file_id=file_id, s3_key=key, bytes=int(head["ContentLength"]), filename=RESULTS_FILENAME)
