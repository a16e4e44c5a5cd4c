"""Continuing: a run that starts from an adapter (the `adapter` channel: a finished job's model dir, its
model.tar.gz, or a checkpoint folder) trains on from exactly those weights; an unusable channel fails clearly; and a
run resumed from a checkpoint in a fresh container writes every step's metrics exactly once (the test-only hold
failing the first run right after its first checkpoint, as its release file asks)."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

from tests.support.trainer_job import sagemaker_env
from tests.unit.test_trainer_dpo import preference_pairs
from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer import job, main
from trainer_image.llmt_trainer.adapter_start import resolve_start_adapter, with_adapter_settings
from trainer_image.llmt_trainer.contract import EXIT_FAILED, HOLD_AT_CHECKPOINT_ENV, Paths
from trainer_image.llmt_trainer.errors import ModelLoadError
from trainer_image.llmt_trainer.hyperparameters import parse_hyperparameters
from trainer_image.llmt_trainer.model_loading import load_model
from trainer_image.llmt_trainer.stops import StopSignal

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft on transformers 5
# 16 examples in steps of 4: 4 steps an epoch.
HYPERPARAMETERS = {"n_epochs": "2", "batch_size": "4", "learning_rate": "0.003", "seed": "7", "lora_dropout": "0"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture(scope="module")
def first_run(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: its model dir (the adapter) and its checkpoints."""
    root = tmp_path_factory.mktemp("first")
    write_jsonl(make_demo_dataset(16, seed=0), root / "train" / "part-0.jsonl")
    job.train(Paths.from_env(sagemaker_env(root, demo_model_dir)), HYPERPARAMETERS, StopSignal())
    return root


def _job(root: Path, base: Path, adapter: Path | None = None, data: list[dict[str, Any]] | None = None) -> Paths:
    write_jsonl(data or make_demo_dataset(16, seed=1), root / "train" / "part-0.jsonl")
    env = sagemaker_env(root, base)
    if adapter is not None:
        env["SM_CHANNEL_ADAPTER"] = str(adapter)
    return Paths.from_env(env)


def _started_weights(base: Path, channel: Path, scratch: Path) -> dict[str, torch.Tensor]:
    start = resolve_start_adapter(channel, scratch)
    hp = with_adapter_settings(parse_hyperparameters(HYPERPARAMETERS)[0], start)
    model = load_model(str(base), hp, CPU, torch.float32, start)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _assert_same(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(weights) == sorted(expected) and weights
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert any(v.abs().sum() > 0 for k, v in expected.items() if "lora_B" in k)  # trained, not a fresh B = 0


def test_a_run_starts_from_the_adapter_a_model_dir_a_tarball_or_a_checkpoint_holds(
    demo_model_dir: Path, first_run: Path, tmp_path: Path
) -> None:
    final = load_file(str(first_run / "model" / "adapter_model.safetensors"))
    [checkpoint] = (first_run / "checkpoints").iterdir()
    assert (checkpoint / "adapter_config.json").is_file()  # a checkpoint is an adapter too
    assert load_file(str(checkpoint / "adapter.safetensors")).keys() == final.keys()

    _assert_same(_started_weights(demo_model_dir, first_run / "model", tmp_path / "a"), final)
    _assert_same(_started_weights(demo_model_dir, first_run / "checkpoints", tmp_path / "b"), final)
    archive_channel = tmp_path / "archive"
    archive_channel.mkdir()
    with tarfile.open(archive_channel / "model.tar.gz", "w:gz") as tar:
        for path in sorted((first_run / "model").iterdir()):
            tar.add(path, arcname=path.name)
    _assert_same(_started_weights(demo_model_dir, archive_channel, tmp_path / "c"), final)


def test_a_started_run_begins_where_the_adapter_left_off_with_its_lora_config(
    demo_model_dir: Path, first_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_demo_dataset(16, seed=0)  # the first run's data: its adapter already knows it
    fresh = job.train(_job(tmp_path / "fresh", demo_model_dir, data=data), HYPERPARAMETERS, StopSignal())
    with caplog.at_level(logging.WARNING):
        started = job.train(_job(tmp_path / "started", demo_model_dir, first_run / "model", data),
                            {**HYPERPARAMETERS, "lora_r": "4"}, StopSignal())

    def first_loss(root: Path) -> float:
        return json.loads((root / "output" / "data" / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]

    assert first_loss(tmp_path / "started") < 0.8 * first_loss(tmp_path / "fresh")
    assert started["hyperparameters"]["lora_r"] == 8 and started["start_adapter_sha256"]
    assert fresh["start_adapter_sha256"] is None
    assert "lora_r=4 -> 8" in caplog.text
    assert (tmp_path / "started" / "model" / "adapter_model.safetensors").is_file()


def test_a_checkpoint_of_another_start_is_not_resumed(demo_model_dir: Path, first_run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-adapter"
    shutil.copytree(first_run / "model", other)
    weights = load_file(str(other / "adapter_model.safetensors"))
    save_file({k: v * 0.5 for k, v in weights.items()}, str(other / "adapter_model.safetensors"))
    job.train(_job(tmp_path / "one", demo_model_dir, first_run / "model"), HYPERPARAMETERS, StopSignal())
    paths = _job(tmp_path / "two", demo_model_dir, other)
    shutil.copytree(tmp_path / "one" / "checkpoints", paths.checkpoint_dir)

    summary = job.train(paths, HYPERPARAMETERS, StopSignal())

    steps = [json.loads(line)["step"] for line in (paths.output_data_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, summary["steps"] + 1))  # trained from step 1, not resumed at the end


def test_an_unusable_adapter_channel_fails_clearly(demo_model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"the adapter channel .* holds no adapter_config\.json"):
        resolve_start_adapter(empty, tmp_path)
    (empty / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(ModelLoadError, match="no weights file"):
        resolve_start_adapter(empty, tmp_path)

    paths = _job(tmp_path / "job", demo_model_dir, tmp_path / "nothing-here")
    (tmp_path / "nothing-here").mkdir()
    assert main.run(paths, [], StopSignal()) == EXIT_FAILED
    assert "holds no adapter_config.json" in paths.failure_file.read_text()


@pytest.mark.parametrize("method", ["supervised", "dpo"])
def test_a_resumed_run_writes_every_steps_metrics_exactly_once(
    demo_model_dir: Path, tmp_path: Path, method: str
) -> None:
    """GIVEN a run whose test-only hold (its path naming the job) finds a release file saying "fail", WHEN it fails
    right after its first checkpoint (step 1) and a new container (empty output dir) resumes on the checkpoints,
    THEN metrics.jsonl and results.csv hold steps 1..total exactly once."""
    data = preference_pairs(16) if method == "dpo" else make_demo_dataset(16, seed=0)
    hyperparameters = {**HYPERPARAMETERS, "method": method, "checkpoint_interval_s": "1e-9"}

    def container(name: str, **extra: str) -> Paths:
        root = tmp_path / name
        write_jsonl(data, root / "train" / "part-0.jsonl")
        (root / "config").mkdir(parents=True)
        (root / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        env = {**sagemaker_env(root, demo_model_dir), "SM_CHECKPOINT_DIR": str(tmp_path / "checkpoints"), **extra}
        return Paths.from_env(env)

    (tmp_path / "release-job-1").write_text("fail\n")
    held = container("first", **{HOLD_AT_CHECKPOINT_ENV: str(tmp_path / "release-{job}"),
                                 "TRAINING_JOB_NAME": "job-1"})
    assert held.hold_at_checkpoint == tmp_path / "release-job-1"

    assert main.run(held, [], StopSignal()) == EXIT_FAILED
    assert held.failure_file.read_text() == (
        "test-only: failed after the checkpoint at step 1 as the release file asked")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-00000001"]

    resumed = container("second")
    assert main.run(resumed, [], StopSignal()) == 0

    records = [json.loads(line) for line in (resumed.output_data_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    assert records[0] == json.loads((held.output_data_dir / "metrics.jsonl").read_text().splitlines()[0])
    rows = (resumed.output_data_dir / "results.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [str(step) for step in range(1, 9)]
