"""The run's metrics: one record per logged step, as a METRICS line on stdout (SageMaker's MetricDefinitions parse
it), a line of metrics.jsonl and a row of results.csv in SM_OUTPUT_DATA_DIR; and their continuity across a resume.

A resumed run is a new container (a new SageMaker job, or a restarted one) whose SM_OUTPUT_DATA_DIR starts empty.
So each checkpoint carries a copy of metrics.jsonl up to its step, and a run resuming from it writes those records
back (metrics.jsonl and results.csv both rewritten) before its own steps follow: the files then hold every step
exactly once. Only stdout starts at the resumed step + 1: those lines were printed by the earlier run."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .contract import METRICS_PREFIX

METRICS_FILE = "metrics.jsonl"
RESULTS_CSV = "results.csv"
# The first five as before (SFT); the DPO ones after them, empty for SFT (and SFT's accuracy empty for DPO).
RESULTS_COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                   "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps", "valid_reward_accuracy")


def _append(records: Iterable[dict[str, Any]], sink: Path) -> None:
    results = sink.parent / RESULTS_CSV
    new = not results.exists()
    with sink.open("a", encoding="utf-8") as lines, results.open("a", encoding="utf-8", newline="") as table:
        writer = csv.writer(table)
        if new:
            writer.writerow(RESULTS_COLUMNS)
        for record in records:
            lines.write(json.dumps(record) + "\n")
            writer.writerow(["" if record.get(name) is None else record[name] for name in RESULTS_COLUMNS])


def emit_metrics(record: dict[str, Any], sink: Path) -> None:
    """A METRICS line on stdout, a line of metrics.jsonl (`sink`) and a row of results.csv (beside it)."""
    print(METRICS_PREFIX + json.dumps(record), flush=True)
    _append([record], sink)


def reset_metrics(sink: Path) -> None:
    """A run starting from step 0 starts its files empty (an earlier attempt's records are not its own)."""
    sink.unlink(missing_ok=True)
    (sink.parent / RESULTS_CSV).unlink(missing_ok=True)


def keep_metrics(sink: Path, checkpoint: Path) -> None:
    """Into a checkpoint being written: the records so far (all of them at or before its step)."""
    if sink.is_file():
        shutil.copyfile(sink, checkpoint / METRICS_FILE)


def restore_metrics_text(kept: str | None, sink: Path, step: int) -> int:
    """metrics.jsonl and results.csv rewritten from a checkpoint's metrics.jsonl text (`kept`: read on any rank,
    restored by rank 0), its records with step <= `step`; their number."""
    reset_metrics(sink)
    records = []
    for line in (kept or "").splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("step", step + 1) <= step:
                records.append(record)
    _append(records, sink)
    return len(records)
