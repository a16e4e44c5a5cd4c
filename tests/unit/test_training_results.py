"""A succeeded job's results CSV: from the trainer's metrics.jsonl inside output.tar.gz."""

from __future__ import annotations

import io
import json
import tarfile

from services.training import results_file
from services.training.results_file import (
    metrics_from_archive,
    output_archive,
    result_file_id,
    results_csv,
)


def _archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_results_csv_has_openais_columns_and_a_row_per_step() -> None:
    csv = results_csv([
        {"step": 1, "epoch": 0.5, "train_loss": 2.5, "learning_rate": 0.0002},
        {"step": 2, "train_loss": 1.25, "valid_loss": 1.5, "train_mean_token_accuracy": 0.5,
         "valid_mean_token_accuracy": 0.25},
        {"note": "not a step"},
    ])
    assert csv.splitlines() == ["step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy",
                                "1,2.5,,,", "2,1.25,0.5,1.5,0.25"]
    assert results_csv([]) == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"


def test_metrics_come_from_the_output_archive_and_bad_lines_are_skipped() -> None:
    lines = b"\n".join([json.dumps({"step": 1, "train_loss": 2.0}).encode(), b"{broken", b"[1, 2]",
                        json.dumps({"step": 2, "train_loss": 1.0}).encode()]) + b"\n"
    archive = _archive({"./metrics.jsonl": lines, "training_summary.json": b"{}"})
    assert metrics_from_archive(archive) == [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0}]
    assert metrics_from_archive(_archive({"training_summary.json": b"{}"})) == []


def test_the_archive_lies_next_to_the_model() -> None:
    assert output_archive("s3://b/training-jobs/u/ftjob-1/output/model.tar.gz") == (
        "b", "training-jobs/u/ftjob-1/output/output.tar.gz")
    assert output_archive("s3://b/elsewhere.bin") is None
    assert output_archive("https://example.com/model.tar.gz") is None


def test_the_result_file_id_is_the_jobs_own() -> None:
    first = result_file_id("ftjob-abc")
    assert first == result_file_id("ftjob-abc") != result_file_id("ftjob-abd")
    assert first.startswith("file-") and len(first) == 29 and first[5:].isalnum()


def test_a_dpo_jobs_results_add_its_reward_columns_and_a_supervised_ones_do_not() -> None:
    dpo = results_file.results_csv([{"step": 1, "train_loss": 0.69, "reward_accuracy": 0.25, "reward_margin": 0.01,
                                     "chosen_logps": -20.5, "rejected_logps": -21.0}])
    header, row = dpo.splitlines()
    assert header.split(",") == [*results_file.RESULTS_COLUMNS, *results_file.DPO_COLUMNS]
    assert row == "1,0.69,,,,0.25,0.01,-20.5,-21.0,"
    supervised = results_file.results_csv([{"step": 1, "train_loss": 2.0}])
    assert supervised.splitlines()[0].split(",") == list(results_file.RESULTS_COLUMNS)
