"""Token-budget batching, the chunked loss and the stop between two rows (issue 12, points 2 and 4), on the demo
model: rows cut first fit decreasing never exceed their budget, the loss over labelled tokens in chunks equals the
plain loss over all logits, a step's update does not depend on how it is cut into rows, and a stop that arrives
between two rows of a step ends the run with the previous step's checkpoint, from which a restart trains exactly
as a run never interrupted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from tests.support.trainer_job import demo_examples, sagemaker_env
from trainer_image.demo_model import build_demo_model, make_demo_dataset, write_jsonl
from trainer_image.llmt_trainer import job, loop
from trainer_image.llmt_trainer.contract import Paths
from trainer_image.llmt_trainer.errors import TrainingStopped
from trainer_image.llmt_trainer.hyperparameters import parse_hyperparameters
from trainer_image.llmt_trainer.masking import IGNORE_INDEX, TokenizedExample, tokenize_conversations
from trainer_image.llmt_trainer.model_loading import load_model
from trainer_image.llmt_trainer.packing import BatchPlan, epoch_steps, pack, rows
from trainer_image.llmt_trainer.stops import StopSignal

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_model(tmp_path_factory.mktemp("base") / "demo-model")


@pytest.fixture(scope="module")
def examples(demo_dir: Path) -> list[TokenizedExample]:
    return demo_examples(demo_dir, 12)


def _example(length: int) -> TokenizedExample:
    return TokenizedExample(list(range(length)), [IGNORE_INDEX, *range(1, length)])


def test_rows_are_first_fit_decreasing_within_the_budget() -> None:
    sizes = [70, 10, 40, 30, 60, 20, 50, 100]
    packed = rows([_example(n) for n in sizes], 100)
    assert all(sum(len(e.input_ids) for e in row) <= 100 for row in packed)
    assert sorted(len(e.input_ids) for row in packed for e in row) == sorted(sizes)  # each example once
    assert [[len(e.input_ids) for e in row] for row in packed] == [[100], [70, 30], [60, 40], [50, 20, 10]]
    assert rows([_example(120)], 100) == [[_example(120)]]  # never dropped, even when over the budget


def test_steps_by_examples_or_by_tokens_are_a_pure_function_of_seed_and_epoch() -> None:
    data = [_example(n) for n in (10, 20, 30, 40, 50, 60, 70, 80)]
    by_examples = epoch_steps(data, BatchPlan(row_tokens=100, examples_per_step=3), seed=1, epoch=0)
    assert [sum(len(row) for row in step) for step in by_examples] == [3, 3, 2]
    by_tokens = epoch_steps(data, BatchPlan(row_tokens=100, tokens_per_step=120), seed=1, epoch=0)
    assert all(sum(len(e.input_ids) for row in step for e in row) >= 120 for step in by_tokens[:-1])
    assert sum(len(e.input_ids) for step in by_tokens for row in step for e in row) == 360
    assert by_tokens == epoch_steps(data, BatchPlan(row_tokens=100, tokens_per_step=120), seed=1, epoch=0)
    assert by_tokens != epoch_steps(data, BatchPlan(row_tokens=100, tokens_per_step=120), seed=1, epoch=1)


def _model(demo_dir: Path) -> Any:
    hp, _ = parse_hyperparameters({"lora_dropout": "0", "seed": "3"})
    return load_model(str(demo_dir), hp, CPU, torch.float32)


@pytest.mark.parametrize("trainable_head", [False, True])  # the fused path, and the checkpointed chunks
def test_the_chunked_loss_over_labelled_tokens_equals_the_loss_over_all_logits(
    demo_dir: Path, examples: list[TokenizedExample], trainable_head: bool
) -> None:
    model = _model(demo_dir)
    model.get_base_model().get_output_embeddings().weight.requires_grad_(trainable_head)
    batch = pack(examples[:4], CPU)
    labels = torch.tensor([[t for e in examples[:4] for t in e.labels]])
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    plain = F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="sum")
    plain.backward()
    expected = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    for chunk in (3, 1024):
        result = loop.batch_loss(model, batch, chunk)
        result.loss.backward()
        assert result.loss.item() == pytest.approx(plain.item(), rel=1e-5)
        for got, want in zip((p.grad for p in model.parameters() if p.requires_grad), expected, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-3)  # summation order differs
        model.zero_grad(set_to_none=True)


def test_a_step_gives_the_same_update_however_it_is_cut_into_rows(
    demo_dir: Path, examples: list[TokenizedExample]
) -> None:
    grads = []
    for budget in (10_000, 64):  # one row, or one row per example or so
        model = _model(demo_dir)
        step = rows(examples[:6], budget)
        batches = [pack(r, CPU) for r in step]
        loss_tokens = sum(b.loss_tokens for b in batches)
        for b in batches:
            (loop.batch_loss(model, b, 1024).loss / loss_tokens).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
        assert (len(step) == 1) == (budget == 10_000)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


def _job(root: Path, demo_dir: Path) -> Paths:
    write_jsonl(make_demo_dataset(12, seed=0), root / "train" / "part-0.jsonl")
    return Paths.from_env(sagemaker_env(root, demo_dir))


# Rows of at most 64 tokens: each step of 4 examples takes several rows, so a stop can fall between two.
HYPERPARAMETERS = {"n_epochs": "1", "batch_size": "4", "max_seq_length": "64", "micro_batch_tokens": "64",
                   "lora_dropout": "0.1", "seed": "5", "learning_rate": "0.003"}


def _metrics(paths: Paths) -> dict[int, dict[str, Any]]:
    lines = (paths.output_data_dir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}


def test_a_stop_between_two_rows_saves_the_last_whole_step_and_resumes_exactly(
    demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = _job(tmp_path / "reference", demo_dir)
    job.train(reference, HYPERPARAMETERS, StopSignal())
    expected = _metrics(reference)

    paths = _job(tmp_path / "stopped", demo_dir)
    stop = StopSignal()
    calls = {"rows": 0}
    real = loop.batch_loss

    def stop_after_the_first_row_of_step_2(model: Any, batch: Any, chunk: int) -> Any:
        calls["rows"] += 1
        result = real(model, batch, chunk)
        if stop.deferred and calls["rows"] == rows_in_step_1 + 1:
            stop.received = "SIGTERM"  # what the handler does inside the loop: only note it
        return result

    plan = BatchPlan(row_tokens=64, examples_per_step=4)
    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    from trainer_image.llmt_trainer.data import load_conversations

    tokenized = tokenize_conversations(tokenizer, load_conversations(paths.train_channel, "train"), 64,
                                       use_generation_tags=True).examples
    first_steps = epoch_steps(tokenized, plan, seed=5, epoch=0)
    rows_in_step_1 = len(first_steps[0])
    assert len(first_steps[1]) >= 2  # step 2 has a second row for the stop to fall before
    monkeypatch.setattr(loop, "batch_loss", stop_after_the_first_row_of_step_2)
    with pytest.raises(TrainingStopped, match="at step 1/"):
        job.train(paths, HYPERPARAMETERS, stop)
    assert [p.name for p in paths.checkpoint_dir.iterdir()] == ["checkpoint-00000001"]
    assert list(_metrics(paths)) == [1]
    monkeypatch.setattr(loop, "batch_loss", real)

    job.train(paths, HYPERPARAMETERS, StopSignal())

    resumed = _metrics(paths)
    assert sorted(resumed) == sorted(expected)
    assert [resumed[s] for s in sorted(resumed)] == [expected[s] for s in sorted(expected)]
